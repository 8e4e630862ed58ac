"""The simulated hardware; knows nothing of Linux.

``Machine`` ties together physical memory, CPUs (with their pkey registers and
TLBs), the table walker and the access check of the selected pkey
architecture.
"""

from kpkeys_sim.machine.cpu import CPU, HwThread
from kpkeys_sim.machine.events import CountingInstrument, Instrument, Instruments
from kpkeys_sim.machine.machine import Machine
from kpkeys_sim.machine.memory import PhysicalMemory
from kpkeys_sim.machine.mmu import Fault, Geometry

__all__ = [
    "CPU",
    "CountingInstrument",
    "Fault",
    "Geometry",
    "HwThread",
    "Instrument",
    "Instruments",
    "Machine",
    "PhysicalMemory",
]
