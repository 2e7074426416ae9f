"""The plugin contract: small `register_*` hooks that each take a callback."""

import pluggy

hookspec = pluggy.HookspecMarker("w2s")
hookimpl = pluggy.HookimplMarker("w2s")


@hookspec
def register_tasks(register):
    "Register Task classes: register(SST2Task)."


@hookspec
def register_models(register):
    "Register Model classes; aliases come from the class: register(HFModel)."


@hookspec
def register_losses(register):
    """Register losses: register("logconf", logconf_loss, options=LogconfOptions)."""


@hookspec
def register_commands(cli):
    "Add click commands to the w2s CLI."


@hookspec
def register_executors(register):
    "Register Executor classes (see w2s.running.executors): register(SlurmExecutor)."
