"""The kit's one exception hierarchy: every error says what is wrong and what to do next.

Every exception the kit raises is a `KitError` subclass defined here, one per domain, so
a caller can catch a domain's failures without importing that domain, and `Report.step`
turns any of them into a failed step that shows the problem and the fix."""


class KitError(Exception):
    """An operator-facing failure: the problem, and the fix."""

    def __init__(self, problem: str, fix: str):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}\n  fix: {fix}" if fix else problem)


# -- core ----------------------------------------------------------------------------------
class ParameterError(KitError):
    """A runbook parameter or a profile is unknown, ill-typed or out of range."""


class Refusal(ParameterError, ValueError):
    """A parameter validator's refusal of one value (a ValueError, so pydantic collects it
    with the parameter's name): what is wrong with the value, and what to write instead.
    A rule between parameters names the one to change (`parameter`)."""

    def __init__(self, problem: str, fix: str, parameter: str = ""):
        super().__init__(problem, fix)
        self.parameter = parameter


class StepFailed(KitError):
    """Raised inside a notebook to stop the runbook after a failed step."""


# -- daemon --------------------------------------------------------------------------------
class InstallError(KitError):
    """Fetching, verifying or placing binaries failed."""


class ConfigError(KitError):
    """buildkitd.toml could not be rendered, written or was refused by the daemon."""


class ServiceError(KitError):
    """The daemon could not be started, stopped or reached."""


class BuildctlError(KitError):
    """buildctl returned an error."""


class ProgramError(KitError):
    """A service beside buildkitd is missing, misconfigured or does not answer."""


# -- cache ---------------------------------------------------------------------------------
class CacheError(KitError):
    """A cache export or import failed, or did not give the builds it should."""


class RegistryError(KitError):
    """The local registry is missing, not configured or does not answer."""


class S3Error(KitError):
    """The S3 server, bucket or credentials are missing or wrong."""


class PruneError(KitError):
    """A prune or retention step could not run."""


class WarmError(KitError):
    """A warm target is wrong, or its cache did not come back all CACHED."""


class BenchError(KitError):
    """A benchmark could not run, or a scenario did not give the builds it should."""


# -- monitoring ----------------------------------------------------------------------------
class ScalingError(BenchError):
    """The scaling benchmark cannot run, or a build in it failed."""


class UpgradeError(KitError):
    """An upgrade could not go ahead (a failed canary switches nothing), or was rolled back."""


class MonitoringError(KitError):
    """Prometheus, its configuration or its targets are missing, invalid or down."""


class AlertingError(KitError):
    """Alertmanager, its routes or a notification channel are missing, invalid or down."""


class DashboardError(KitError):
    """The dashboard could not be generated, or Prometheus gave no data to draw."""


# -- production ----------------------------------------------------------------------------
class HostError(KitError):
    """A rehearsal host cannot be made, booted, reached or stopped."""


class AccessError(KitError):
    """The front door, the certificate authority, a certificate or the audit log is wrong."""


# -- scanning ------------------------------------------------------------------------------
class ScanError(KitError):
    """A Dockerfile lint, an SBOM or the deny-list gate failed, or could not run."""


# -- fleet ---------------------------------------------------------------------------------
class FleetError(KitError):
    """The local cluster cannot be built, started or stopped, or a cluster refused the fleet."""


# -- plugins -------------------------------------------------------------------------------
class PluginError(KitError):
    """A Docker CLI plugin could not be audited, quarantined or restored."""


# -- labs ----------------------------------------------------------------------------------
class LabError(KitError):
    """A practice lab is unknown, not started, or its sandbox cannot be made."""
