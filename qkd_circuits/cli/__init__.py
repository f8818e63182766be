"""The ``qkd`` command line: one module per command group.

=====================  ==================================================================
module                 commands
=====================  ==================================================================
:mod:`.bb84`           ``qkd run`` (one round in this process; ``--mitm``, ``--store-a/-b``)
:mod:`.cloud`          ``qkd submit``, ``qkd status``, ``qkd collect``, ``qkd cancel`` (a round's jobs via a handle)
:mod:`.party`          ``qkd alice``, ``qkd bob`` (one party per process, over TCP)
:mod:`.analysis`       ``qkd keyrate``, ``qkd decoy`` (the plot and provenance line in :mod:`.keyrate_plot`)
:mod:`.auth`           ``qkd psk ...``, ``qkd pki ...``
:mod:`.kme`            ``qkd kme ...`` (server side; the SAE side in :mod:`.kme_client`)
:mod:`.node`           ``qkd node ...``
:mod:`.sweep`          ``qkd sweep``
=====================  ==================================================================

The round options are generated from :data:`qkd_circuits.params.PARAMETERS` (:mod:`.options`), and
every command maps exceptions to exit codes through :func:`.errors.exit_codes`: 0 a key was made,
3 the protocol aborted (reason in the report), 2 bad usage, 1 a backend failed.  The modules
import only click and the package's light layers; each command imports what it runs.
"""

from __future__ import annotations

import click

from .analysis import decoy_command, keyrate
from .auth import pki_group, psk
from .bb84 import run
from .cloud import cancel, collect, status, submit
from .errors import EXIT_ABORTED, EXIT_BACKEND, EXIT_OK, EXIT_USAGE
from .kme import kme
from .node import node_group
from .party import alice, bob
from .sweep import sweep_command

__all__ = ["EXIT_ABORTED", "EXIT_BACKEND", "EXIT_OK", "EXIT_USAGE", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="qkd_circuits")
def main() -> None:
    """qkd_circuits: BB84 quantum key distribution on Qiskit circuits.

    Keys made on a simulator or a cloud QPU are known to whoever runs it: they are for study.
    """


for _command in (run, submit, status, collect, cancel, alice, bob, keyrate, decoy_command, pki_group, psk, kme, sweep_command, node_group):
    main.add_command(_command)
