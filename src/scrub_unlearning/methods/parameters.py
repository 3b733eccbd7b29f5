"""Re-export: the declarations (`Param`, `REQUIRED`) and `check_parameters` live in `scrub_unlearning.parameters`,
where `training` (the Original's recipe, `RECIPE_PARAMETERS`) can import them without a cycle through `methods`."""

from ..parameters import REQUIRED, Param, check_parameters, check_value, describe

__all__ = ["REQUIRED", "Param", "check_parameters", "check_value", "describe"]
