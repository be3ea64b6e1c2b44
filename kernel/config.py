"""The simulated machine's configuration: RAM, CPUs, e820 map and kernel options.

Read from YAML with the safe loader (no object tags) and validated key by key, so that a typo
is a one-line error naming the file, line and key rather than a silently ignored option.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import yaml
from mmsim.kernel import config_keys, units
from mmsim.kernel.units import parse_size
from mmsim.mm.constants import PAGE_SIZE

#: Each of OSv's linear-map areas (main 0x4000_0000_0000, page 0x5000_..., mempool 0x6000_...)
#: is 16 TiB (address bits 0-43, §1): usable RAM must end at or below 16 TiB, or it runs into
#: the next area (§6 virt_to_phys masks 44 bits; §10 maps all RAM in the three areas).
LINEAR_AREA_SIZE = 1 << 44
#: The largest ``memory`` of the default layout, whose RAM from 3 GiB up lies above the 1 GiB
#: PCI hole: its top is memory + 1 GiB.
MAX_MEMORY = LINEAR_AREA_SIZE - (1 << 30)
#: The smallest ``memory`` the default layout can describe: low memory, the BIOS hole and
#: SeaBIOS's reserved top (the guest itself may still be too small to boot: out of memory).
MIN_MEMORY = 0x100000 + 0x23000 + 0x1000

#: SeaBIOS (QEMU's firmware) reserves the top 140 KiB of low RAM (ACPI tables and its own
#: data): with the 640K hole it makes OSv's phys_mem_size RAM - 0x83400, which is why real
#: OSv's ARC sizes from RAM - 528 KiB (osv-real.md §3: c_max = 5/8 of it, to the byte).
SEABIOS_RESERVED = 0x23000

#: The root file systems OSv images are built with, and their kernel ELF sizes (osv-real.md
#: §1, loader-stripped.elf of the ZFS and ROFS builds at 0e34e4dc).
ROOTFS_ELF_SIZE = {"zfs": 7_170_616, "rofs": 6_351_416}
#: What the kernel occupies in memory past its ELF: .bss and the alignment to ``.edata``,
#: up to which OSv gives no memory (arch_setup_free_memory). Measured, not in the code: real
#: OSv's RAM - MemTotal is ELF + 1,091,016 B for both builds, of which 0x83400 is the
#: firmware's (above) and 0x1c00 page 0 and the partial page under 640K.
KERNEL_BSS = 546_248


class ConfigError(ValueError):
    """A bad configuration value; str() is the one-line message for the user.

    ``key`` and ``reason`` are set for a bad value of one key: the key and what is wrong with
    its value, without the file, line or option that str() names.
    """

    def __init__(self, message: str, path: str | None = None, line: int = 0, *,
                 key: str | None = None, reason: str | None = None) -> None:
        where = f"{path}:{line}: " if path and line else f"{path}: " if path else ""
        super().__init__(where + message)
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class E820Entry:
    """One entry of the firmware memory map; type 1 is usable RAM, anything else is reserved."""

    start: int
    length: int
    type: int = 1

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass
class KernelConfig:
    """Everything `boot` needs. Defaults are OSv's `run.py` VM: 2 GiB, 4 vCPUs, huge pages on."""

    memory: int = 2 << 30
    cpus: int = 4
    hugepages: bool = True
    giant_pages: bool = False
    #: the root file system: "zfs" (OSv's default) or "rofs"
    rootfs: str = "zfs"
    #: the kernel's size in memory from 2 MiB (ELF + .bss); None: that of the rootfs's build
    kernel_size: int | None = None
    e820: list[E820Entry] | None = None
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    #: the folder of the configuration file, if any (user shrinkers' modules may live there)
    base_dir: str | None = None

    @property
    def kernel_bytes(self) -> int:
        """The kernel image's size in memory: the configured one, or the rootfs build's."""
        if self.kernel_size is not None:
            return self.kernel_size
        return ROOTFS_ELF_SIZE[self.rootfs] + KERNEL_BSS

    def e820_map(self) -> list[E820Entry]:
        """The given map, or QEMU's (SeaBIOS): low RAM, the 640K-1M hole, RAM up to SeaBIOS's
        reserved top, and above 3 GiB the PCI hole with the rest of RAM from 4 GiB."""
        if self.e820 is not None:
            return list(self.e820)
        mem = self.memory
        low_end = mem if mem < 0xE000_0000 else 0xC000_0000
        entries = [
            E820Entry(0, 0x9FC00, 1),
            E820Entry(0x9FC00, 0x100000 - 0x9FC00, 2),
            E820Entry(0x100000, low_end - SEABIOS_RESERVED - 0x100000, 1),
            E820Entry(low_end - SEABIOS_RESERVED, SEABIOS_RESERVED, 2),
        ]
        if low_end < mem:
            entries.append(E820Entry(0xC000_0000, 0x4000_0000, 2))
            entries.append(E820Entry(0x1_0000_0000, mem - low_end, 1))
        return entries


#: every key, from the one table of them (kernel/config_keys.py)
_KEYS = {k.name: k.doc for k in config_keys.KEYS}


def _check_extra(key: str, value: Any) -> None:
    """A subsystem key's value, checked by the subsystem that reads it (ValueError)."""
    config_keys.check_value(key, value)


def known_keys() -> dict[str, str]:
    return dict(_KEYS)


class RefusedYAML(yaml.MarkedYAMLError):
    """YAML that configuration files may not use: an alias, a duplicate key."""


class NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (``*name``): a few nested ones expand a 1 KB file into
    billions of values (a "billion laughs"), and loading would never end. Every mmsim YAML file
    (configurations, image manifests, sweeps) is read with it."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise RefusedYAML(None, None, f"aliases are not allowed (*{event.anchor})",
                              event.start_mark)
        return super().compose_node(parent, index)


class _LineLoader(NoAliasLoader):
    """The loader of config files and manifests: no aliases, no duplicate keys (the last value
    would win silently), and the line of every mapping key remembered, for error messages."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    seen: set[Any] = set()
    for k, _ in node.value:
        key = loader.construct_object(k)
        try:
            duplicate = key in seen
        except TypeError:
            break  # an unhashable key: construct_mapping names it
        if duplicate:
            raise RefusedYAML(None, None, f"duplicate key '{key}'", k.start_mark)
        seen.add(key)
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=True)
    mapping["__lines__"] = {
        loader.construct_object(k): k.start_mark.line + 1 for k, _ in node.value
    }
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


#: how deep a configuration, sweep file, manifest or summary may nest: far more than any of
#: them needs, far less than the parsers' recursion can follow
MAX_NESTING = 64


def nesting_depth(data: Any, limit: int = MAX_NESTING) -> int:
    """How deep ``data`` nests lists and mappings (iteratively, stopping past ``limit``)."""
    deepest = 0
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list | tuple):
            deepest = max(deepest, depth + 1)
            if deepest > limit:
                return deepest
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)
    return deepest


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping safely; every error is a ConfigError naming the file and line."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError(f"nested more than {MAX_NESTING} levels deep", path) from None
    except FileNotFoundError:
        raise ConfigError("no such file", path) from None
    except IsADirectoryError:
        raise ConfigError("is a directory", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not a UTF-8 text file", path) from None
    except yaml.constructor.ConstructorError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 0
        raise ConfigError(f"unsupported YAML tag ({e.problem})", path, line) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        raise ConfigError(f"bad YAML: {getattr(e, 'problem', e)}", path, line) from None
    if data is None:
        return {"__lines__": {}}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of configuration keys", path, 1)
    if nesting_depth(data, MAX_NESTING + 1) > MAX_NESTING + 1:  # + the line numbers' level
        raise ConfigError(f"nested more than {MAX_NESTING} levels deep", path)
    return data


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k != "__lines__"}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def _as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"'{key}' must be true or false, not {value!r}")


def _as_int(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"'{key}' must be an integer in {lo}..{hi}, not {value!r}")
    return value


def _e820(value: Any) -> list[E820Entry]:
    if not isinstance(value, list) or not value:
        raise ValueError("'e820' must be a non-empty list of {start, length, type}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not {"start", "length"} <= set(item) or set(item) - {
            "start", "length", "type"}:
            raise ValueError(f"e820 entry {i}: expected keys start, length and optional type")
        typ = _as_int("type", item.get("type", 1), 1, 255)
        out.append(E820Entry(parse_size(item["start"]), parse_size(item["length"]), typ))
    out.sort(key=lambda e: e.start)
    for a, b in zip(out, out[1:], strict=False):
        if b.start < a.end:
            raise ValueError(f"e820 entries at {a.start:#x} and {b.start:#x} overlap")
    _check_top(out)
    return out


def apply_settings(
    config: KernelConfig, settings: dict[str, Any], path: str | None = None
) -> KernelConfig:
    """Validate ``settings`` (from YAML or the command line) and return an updated config."""
    lines = settings.get("__lines__", {})
    updates: dict[str, Any] = {}
    extra = dict(config.extra)
    for key, value in settings.items():
        if key == "__lines__":
            continue
        line = lines.get(key, 0)
        if key not in _KEYS:
            raise ConfigError(
                f"unknown key '{key}' (known: {', '.join(sorted(_KEYS))})", path, line
            )
        try:
            if key == "memory":
                updates[key] = _check_memory(parse_size(value))
            elif key == "kernel_size":
                updates[key] = parse_size(value)
            elif key == "rootfs":
                if not isinstance(value, str) or value not in ROOTFS_ELF_SIZE:
                    raise ValueError(f"'rootfs' must be zfs or rofs, not {value!r}")
                updates[key] = value
            elif key == "cpus":
                updates[key] = _as_int(key, value, 1, 256)
            elif key == "seed":
                updates[key] = _as_int(key, value, 0, 2**63 - 1)
            elif key in ("hugepages", "giant_pages"):
                updates[key] = _as_bool(key, value)
            elif key == "e820":
                updates[key] = _e820(_strip_lines(value))
            else:
                extra[key] = _strip_lines(value)
                _check_extra(key, extra[key])
        except ValueError as e:
            reason = getattr(e, "reason", None) or str(e)
            if reason.startswith(f"'{key}': "):
                reason = reason[len(key) + 4:]
            if path:  # file:line: key: what is wrong
                if reason.startswith(f"'{key}' "):  # 'cpus' must be ... -> cpus: must be ...
                    reason = reason[len(key) + 3:]
                where = "" if reason.startswith(key) else f"{key}: "
            else:  # from the command line there is no file: name the option instead
                where = f"--{key.replace('_', '-')}: "
            raise ConfigError(f"{where}{reason}", path, line, key=key, reason=reason) from None
    _memory_and_e820(config, updates, path, lines.get("memory", 0))
    new = dataclasses.replace(config, **updates, extra=extra)
    try:
        validate(new)
    except ValueError as e:
        raise ConfigError(str(e), path) from None
    return new


def _memory_and_e820(config: KernelConfig, updates: dict[str, Any], path: str | None,
                     line: int) -> None:
    """Keep ``memory`` the RAM size when an e820 map gives it (docs/configuration.md).

    ``memory`` and ``e820`` in one file must agree (memory == the map's usable RAM), else it
    is an error at memory's line; the map alone sets ``memory``. A later ``memory`` from the
    command line (no ``path``) overrides an earlier file's map: that size, in the default layout.
    """
    if "e820" in updates:
        ram = sum(e.length for e in updates["e820"] if e.type == 1)
        given = updates.get("memory", ram)
    elif "memory" in updates and config.e820 is not None:
        if path is None:
            updates["e820"] = None  # the command line overrides the file's map
            return
        ram, given = config.memory, updates["memory"]
    else:
        return
    if given != ram:
        size = units.format_size_exact
        reason = (f"{size(given)} disagrees with the e820 map's {size(ram)} of usable RAM "
                  "(give one or the other: the map sets the RAM size)")
        raise ConfigError(f"memory: {reason}", path, line)
    updates["memory"] = ram


def _check_memory(memory: int) -> int:
    """``memory`` if the default layout (:meth:`KernelConfig.e820_map`) can hold it."""
    if memory < MIN_MEMORY:
        raise ValueError(f"memory {memory} is smaller than the firmware's layout "
                         f"({units.format_size_exact(MIN_MEMORY)} at least)")
    if memory > MAX_MEMORY:
        raise ValueError(
            f"memory {units.format_size_exact(memory)} is more than OSv's layout holds: at most "
            f"{units.format_size_exact(MAX_MEMORY)} (each linear-map area is 16T, and RAM above "
            "3G lies past the 1G PCI hole)")
    if memory % PAGE_SIZE:
        raise ValueError("memory must be a multiple of 4K")
    return memory


def _check_top(e820: list[E820Entry]) -> None:
    """Usable RAM must end within one linear-map area (16 TiB)."""
    top = max((e.end for e in e820 if e.type == 1), default=0)
    if top > LINEAR_AREA_SIZE:
        raise ValueError(
            f"e820: usable RAM ends at {top:#x}, past 16T ({LINEAR_AREA_SIZE:#x}), the size of "
            "each of OSv's linear-map areas")


def validate(config: KernelConfig) -> None:
    """Whole-config checks: sizes that a machine can have."""
    if config.e820 is None:
        _check_memory(config.memory)
    if not any(e.type == 1 and e.length > 0 for e in config.e820_map()):
        raise ValueError("no usable memory in the e820 map")
    _check_top(config.e820_map())
    if config.kernel_size is not None and not 0 < config.kernel_size <= 1 << 30:
        raise ValueError("kernel_size must be between 1 byte and 1G")


def load_config(path: str | None, overrides: dict[str, Any] | None = None) -> KernelConfig:
    """Defaults, then the YAML file, then the command line's twins of its keys."""
    config = KernelConfig()
    if path:
        config = apply_settings(config, load_yaml(path), path)
        config = dataclasses.replace(config, base_dir=os.path.dirname(os.path.abspath(path)))
    if overrides:
        config = apply_settings(config, {k: v for k, v in overrides.items() if v is not None})
    return config
