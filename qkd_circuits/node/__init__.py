"""Link nodes: one long-running process per site (``qkd node run DIR``).

See :mod:`qkd_circuits.node.service` for how keys reach both sites' stores, and
:mod:`qkd_circuits.node.quantum` for the simulated quantum channel between the nodes.
"""

from .config import NodeConfig, default_config_text, load_config
from .service import Node, read_status

__all__ = ["Node", "NodeConfig", "default_config_text", "load_config", "read_status"]
