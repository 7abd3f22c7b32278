"""
Tests for devpi_tx.  DeprecationWarnings raised from devpi_tx modules and
coroutines that were never awaited are errors.
"""

import warnings

warnings.filterwarnings("error", category=DeprecationWarning, module=r"devpi_tx(\..*)?$")
warnings.filterwarnings("error", message=r"coroutine .* was never awaited")

# cheap password hashes keep the suite fast; verification reads the cost
# from each stored hash, so production-cost hashes are still checked
from devpi_tx.domain.auth import set_password_cost  # noqa: E402

set_password_cost(time_cost=1, memory_cost=1024, parallelism=1)
