"""Re-export of :mod:`hf_lnorm.outputs`, the output-folder logic, under its older private name."""

from ..outputs import (MARKER, OutputExistsError, UnsafeOutputError, check_output_dir,  # noqa: F401
                       is_hf_lnorm_output, remove_stale_staging, staged_output_dir, write_marker)
