"""How a trial ends, and the signals that end it.

A scenario trial ends in exactly one of four outcomes (the issue's
definitions, applied in this order of precedence):

``detected``
    A detector (KASAN report, MTE tag-check fault, the kernel's own "Bad
    page state"/``VM_BUG_ON`` checks) reported the bug, before or after the
    corrupting write landed.  ``when`` is ``"before_write"`` or
    ``"after_write"``; the second is counted in ``detected_after_write``.
    A detector does not by itself stop the write: under
    ``kasan.fault=report`` the kernel continues, so the payoff may still be
    observed, and the explanation records it.
``prevented``
    A permission check made the corrupting write fault and it did not land
    (pkey overlay fault, PKS fault, stage-2 permission fault, hypervisor
    validation).  ``check`` names the check.
``succeeded``
    The corrupting write landed and the payoff check passed (a user process
    read or wrote a physical page it must not reach, a kernel page became
    writable, credentials were raised, ...).
``failed``
    The groom missed: the write landed somewhere harmless, or the
    precondition (e.g. reclaiming the freed slab page as a page table) did
    not happen, and nothing stopped or detected the attempt.

Signals: the access layer raises :class:`Prevented` when a write faults and
:class:`Detected` when a synchronous detector fires with the kernel
configured to stop (``kasan.fault=panic``); report-mode detections are
recorded on the trial's :class:`Trace` and the attack goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DETECTED",
    "FAILED",
    "OUTCOMES",
    "PREVENTED",
    "SUCCEEDED",
    "Detected",
    "Detection",
    "Prevented",
    "Trace",
    "TrialResult",
]

SUCCEEDED = "succeeded"
PREVENTED = "prevented"
DETECTED = "detected"
FAILED = "failed"
OUTCOMES: tuple[str, ...] = (SUCCEEDED, PREVENTED, DETECTED, FAILED)


@dataclass(frozen=True, slots=True)
class Detection:
    """One detector report: who reported, what, and at which attacker step."""

    detector: str
    what: str
    step: int
    write_landed: bool
    decoy: bool = False


class Prevented(Exception):
    """A permission check stopped an attacker-driven write; ``check`` names it."""

    def __init__(self, check: str, detail: str = "") -> None:
        self.check = check
        self.detail = detail
        super().__init__(f"{check}: {detail}" if detail else check)


class Detected(Exception):
    """A detector fired and the kernel stopped (panic): the trial ends here."""

    def __init__(self, detection: Detection) -> None:
        self.detection = detection
        super().__init__(f"{detection.detector}: {detection.what}")


@dataclass(slots=True)
class Trace:
    """What one trial did: attacker steps, the corrupting write, reports.

    ``step`` counts attacker-visible steps (syscalls, user accesses); the
    corrupting write records the step it happened at, so the number of
    steps an asynchronous report lags behind the write can be logged (spec
    threats-and-peers.md §7 S1 "for mte-async, how many attacker steps
    execute between the stale write and the report").
    """

    step: int = 0
    #: True while the attacker deliberately triggers a benign bug (S11's decoy):
    #: reports made then are logged but are not a detection of the attack.
    decoy: bool = False
    write_step: int | None = None
    write_landed: bool = False
    detections: list[Detection] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, int] = field(default_factory=dict)

    def tick(self, n: int = 1) -> None:
        """Count ``n`` attacker steps."""
        self.step += n

    def note(self, msg: str) -> None:
        """Record a line of explanation."""
        self.notes.append(msg)

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to metric ``key``."""
        self.metrics[key] = self.metrics.get(key, 0) + n

    def report(self, detector: str, what: str) -> Detection:
        """Record a detector report at the current step."""
        d = Detection(detector, what, self.step, self.write_landed, self.decoy)
        self.detections.append(d)
        return d


@dataclass(frozen=True, slots=True)
class TrialResult:
    """The outcome of one trial and the one-line reason for it."""

    outcome: str
    reason: str
    detected_after_write: bool = False
    payoff: bool = False
    metrics: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"bad outcome {self.outcome!r}: must be one of {OUTCOMES}")
