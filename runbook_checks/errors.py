"""One exception hierarchy. Every message says what is wrong and what to do next."""


class KitError(Exception):
    """Base class: an operator-facing failure with a fix."""

    def __init__(self, problem: str, fix: str = ""):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  fix: {fix}" if fix else problem)


class ParameterError(KitError):
    """A runbook parameter is unknown, ill-typed or out of range."""


class InstallError(KitError):
    """Fetching, verifying or placing binaries failed."""


class ConfigError(KitError):
    """buildkitd.toml could not be rendered, written or was refused by the daemon."""


class ServiceError(KitError):
    """The daemon could not be started, stopped or reached."""


class BuildctlError(KitError):
    """buildctl returned an error."""


class StepFailed(KitError):
    """Raised inside a notebook to stop the runbook after a failed step."""


class PluginError(KitError):
    """A Docker CLI plugin could not be audited, quarantined or restored."""
