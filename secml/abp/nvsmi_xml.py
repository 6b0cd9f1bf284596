"""Read real ``nvidia-smi -q -x`` XML into the same flattened records the generator writes.

One record per ``<gpu>``: the log-level scalars (``nvidia_smi_log.timestamp``,
``driver_version``...) plus the GPU subtree flattened into ``nvidia_smi_log.gpu.*`` keys with
the values as printed. Repeated sibling elements (e.g. ``process_info``) get an index
(``processes.process_info.0.pid``); ``supported_clocks`` (hundreds of entries, no feature
uses it) is left out.

CLI: ``nvidia-smi -q -x | python -m secml.abp.nvsmi_xml > gpu.jsonlines`` or
``python -m secml.abp.nvsmi_xml --run`` to query the local GPUs.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

log = logging.getLogger(__name__)

SKIP = frozenset({"supported_clocks"})


class NvsmiXmlError(ValueError):
    """The XML is not nvidia-smi's ``-q -x`` output."""


def _flatten(elem: ET.Element, prefix: str, out: dict[str, str]) -> None:
    """Flatten ``elem``'s children into ``out`` under ``prefix``."""
    children = list(elem)
    if not children:
        out[prefix] = (elem.text or "").strip()
        return
    counts: dict[str, int] = {}
    for child in children:
        counts[child.tag] = counts.get(child.tag, 0) + 1
    seen: dict[str, int] = {}
    for child in children:
        if child.tag in SKIP:
            continue
        name = f"{prefix}.{child.tag}"
        if counts[child.tag] > 1:
            name = f"{name}.{seen.get(child.tag, 0)}"
            seen[child.tag] = seen.get(child.tag, 0) + 1
        _flatten(child, name, out)


def parse_xml(text: str | bytes) -> list[dict[str, str]]:
    """Parse ``nvidia-smi -q -x`` output into one flattened record per GPU."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise NvsmiXmlError(f"not well-formed XML: {exc}") from None
    if root.tag != "nvidia_smi_log":
        raise NvsmiXmlError(f"root element is <{root.tag}>, expected <nvidia_smi_log>")
    common: dict[str, str] = {}
    gpus = []
    for child in root:
        if child.tag == "gpu":
            gpus.append(child)
        elif len(child) == 0:
            common[f"nvidia_smi_log.{child.tag}"] = (child.text or "").strip()
    if not gpus:
        raise NvsmiXmlError("no <gpu> element in the nvidia-smi output")
    records = []
    for gpu in gpus:
        rec = dict(common)
        _flatten(gpu, "nvidia_smi_log.gpu", rec)
        records.append(rec)
    return records


def read_xml(path: str | Path) -> list[dict[str, str]]:
    """Read an ``nvidia-smi -q -x`` file into flattened records."""
    return parse_xml(Path(path).read_bytes())


def query_local_gpus(binary: str = "nvidia-smi", timeout_s: float = 30.0) -> list[dict[str, str]]:
    """Run ``nvidia-smi -q -x`` on this host and return its records."""
    exe = shutil.which(binary)
    if exe is None:
        raise FileNotFoundError(f"{binary} not found on PATH; is an NVIDIA driver installed?")
    proc = subprocess.run([exe, "-q", "-x"], capture_output=True, timeout=timeout_s, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{binary} -q -x failed ({proc.returncode}): {proc.stderr.decode()}")
    return parse_xml(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    """CLI: convert XML (file, stdin or a live query) to JSON lines on stdout."""
    parser = argparse.ArgumentParser(description="nvidia-smi -q -x XML to nvsmi JSON lines")
    parser.add_argument("xml", nargs="?", default="-", help="XML file, or - for stdin")
    parser.add_argument("--run", action="store_true", help="query the local GPUs instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        if args.run:
            records = query_local_gpus()
        elif args.xml == "-":
            records = parse_xml(sys.stdin.buffer.read())
        else:
            records = read_xml(args.xml)
    except (NvsmiXmlError, OSError, RuntimeError) as exc:
        log.error("%s", exc)
        return 2
    for rec in records:
        sys.stdout.write(json.dumps(rec) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
