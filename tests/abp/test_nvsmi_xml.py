"""Tests for the ``nvidia-smi -q -x`` reader: same records as the generator, errors, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from secml.abp.features import FEATURES, parse_record
from secml.abp.model import score
from secml.abp.nvsmi_xml import NvsmiXmlError, main, parse_xml

G = "nvidia_smi_log.gpu."

# Shaped like driver 535's output (gpu_power_readings, clocks_event_reasons), trimmed.
SAMPLE = """<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">
<nvidia_smi_log>
  <timestamp>Sun Nov 22 04:21:04 2026</timestamp>
  <driver_version>535.129.03</driver_version>
  <cuda_version>12.2</cuda_version>
  <attached_gpus>2</attached_gpus>
  {gpus}
</nvidia_smi_log>
"""
GPU = """<gpu id="00000000:{bus}:00.0">
    <product_name>NVIDIA A10</product_name>
    <uuid>GPU-{bus}aa</uuid>
    <pci><pci_bus>{bus}</pci_bus><pci_gpu_link_info><pcie_gen><max_link_gen>4</max_link_gen>
    </pcie_gen></pci_gpu_link_info></pci>
    <fb_memory_usage><total>23028 MiB</total><reserved>574 MiB</reserved>
      <used>{used} MiB</used><free>{free} MiB</free></fb_memory_usage>
    <utilization><gpu_util>{util} %</gpu_util><memory_util>{mutil} %</memory_util>
      <encoder_util>0 %</encoder_util><decoder_util>0 %</decoder_util></utilization>
    <temperature><gpu_temp>61 C</gpu_temp><gpu_temp_max_threshold>98 C</gpu_temp_max_threshold>
      <gpu_temp_slow_threshold>95 C</gpu_temp_slow_threshold></temperature>
    <gpu_power_readings><power_state>P0</power_state><power_draw>{power} W</power_draw>
      <current_power_limit>150.00 W</current_power_limit></gpu_power_readings>
    <clocks><graphics_clock>{gfx} MHz</graphics_clock><sm_clock>{gfx} MHz</sm_clock>
      <mem_clock>6251 MHz</mem_clock><video_clock>1305 MHz</video_clock></clocks>
    <applications_clocks><graphics_clock>1695 MHz</graphics_clock>
      <mem_clock>6251 MHz</mem_clock></applications_clocks>
    <default_applications_clocks><graphics_clock>1695 MHz</graphics_clock>
      <mem_clock>6251 MHz</mem_clock></default_applications_clocks>
    <max_clocks><graphics_clock>1695 MHz</graphics_clock><sm_clock>1695 MHz</sm_clock>
      <mem_clock>6251 MHz</mem_clock><video_clock>1500 MHz</video_clock></max_clocks>
    <supported_clocks><supported_mem_clock><value>6251 MHz</value>
      <supported_graphics_clock>1695 MHz</supported_graphics_clock></supported_mem_clock>
    </supported_clocks>
    <processes>
      <process_info><pid>101</pid><process_name>python</process_name>
        <used_memory>4000 MiB</used_memory></process_info>
      <process_info><pid>202</pid><process_name>xmrig</process_name>
        <used_memory>5000 MiB</used_memory></process_info>
    </processes>
    <accounted_processes/>
  </gpu>"""


def _xml(*gpus: dict) -> str:
    return SAMPLE.format(gpus="\n".join(GPU.format(**g) for g in gpus))


IDLE = {"bus": "3B", "used": 0, "free": 22454, "util": 0, "mutil": 0, "power": "15.80", "gfx": 210}
MINER = {"bus": "5E", "used": 5600, "free": 16854, "util": 100, "mutil": 97, "power": "98.40",
         "gfx": 1050}  # fmt: skip


def test_one_record_per_gpu_with_flattened_keys() -> None:
    recs = parse_xml(_xml(IDLE, MINER))
    assert len(recs) == 2
    rec = recs[1]
    assert rec["nvidia_smi_log.timestamp"] == "Sun Nov 22 04:21:04 2026"
    assert rec["nvidia_smi_log.driver_version"] == "535.129.03"
    assert rec[G + "uuid"] == "GPU-5Eaa"
    assert rec[G + "fb_memory_usage.used"] == "5600 MiB"
    assert rec[G + "pci.pci_gpu_link_info.pcie_gen.max_link_gen"] == "4"
    assert rec[G + "processes.process_info.1.process_name"] == "xmrig"
    assert rec[G + "accounted_processes"] == ""
    assert not any("supported_clocks" in k for k in rec)


def test_xml_records_parse_into_the_18_features() -> None:
    row = parse_record(parse_xml(_xml(MINER))[0])
    assert not any(math.isnan(v) for v in row)
    assert row[FEATURES.index(G + "power_readings.power_draw")] == pytest.approx(98.4)
    assert row[FEATURES.index(G + "utilization.memory_util")] == 97


def test_xml_records_score_like_generated_ones(fleet) -> None:
    from secml.abp.features import to_matrix

    s = score(fleet.booster, to_matrix(parse_xml(_xml(IDLE, MINER))))
    assert s[0] < 0.5 < s[1]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("<nvidia_smi_log><gpu>", "not well-formed"), ("<foo/>", "expected <nvidia_smi_log>"),
     ("<nvidia_smi_log><timestamp>x</timestamp></nvidia_smi_log>", "no <gpu>")],
)  # fmt: skip
def test_errors_say_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(NvsmiXmlError, match=fragment):
        parse_xml(text)


def test_cli_converts_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "q.xml"
    path.write_text(_xml(IDLE, MINER))
    assert main([str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(x)[G + "uuid"] for x in lines] == ["GPU-3Baa", "GPU-5Eaa"]
    bad = tmp_path / "bad.xml"
    bad.write_text("<foo/>")
    assert main([str(bad)]) == 2


# Shaped like driver 580's output: padded values, power_draw N/A beside instant_power_draw,
# and temperature thresholds printed relative to T.Limit (no absolute max/slow thresholds).
DRIVER_580 = """<nvidia_smi_log>
  <driver_version>580.82.07</driver_version>
  <gpu id="00000000:41:00.0">
    <product_name>NVIDIA L40S</product_name>
    <uuid>GPU-41bb</uuid>
    <fb_memory_usage><total>46068 MiB</total><used> 512 MiB </used>
      <free> 45023 MiB </free></fb_memory_usage>
    <utilization><gpu_util> 3 % </gpu_util><memory_util> 1 % </memory_util></utilization>
    <temperature><gpu_temp> 41 C </gpu_temp><gpu_temp_tlimit>45 C</gpu_temp_tlimit>
      <gpu_temp_max_tlimit_threshold>-7 C</gpu_temp_max_tlimit_threshold>
      <gpu_temp_slow_tlimit_threshold>-2 C</gpu_temp_slow_tlimit_threshold></temperature>
    <gpu_power_readings><power_draw> N/A </power_draw><average_power_draw> N/A </average_power_draw>
      <instant_power_draw> 83.17 W </instant_power_draw></gpu_power_readings>
  </gpu>
</nvidia_smi_log>"""


def test_driver_580_layout_reads_power_from_instant_power_draw() -> None:
    rec = parse_xml(DRIVER_580)[0]
    row = parse_record(rec)
    assert row[FEATURES.index(G + "power_readings.power_draw")] == pytest.approx(83.17)
    assert row[FEATURES.index(G + "fb_memory_usage.used")] == 512
    assert row[FEATURES.index(G + "utilization.gpu_util")] == 3
    assert row[FEATURES.index(G + "temperature.gpu_temp")] == 41
    # T.Limit-relative thresholds are a different quantity: missing, not misread.
    assert math.isnan(row[FEATURES.index(G + "temperature.gpu_temp_max_threshold")])
    assert math.isnan(row[FEATURES.index(G + "temperature.gpu_temp_slow_threshold")])


def test_mig_layout_keeps_per_instance_memory_apart() -> None:
    xml = (
        _xml(IDLE)
        .replace(
            "<fb_memory_usage>",
            "<mig_devices><mig_device><index>0</index><fb_memory_usage><total>9 MiB</total>"
            "<used>7 MiB</used><free>2 MiB</free></fb_memory_usage></mig_device>"
            "<mig_device><index>1</index><fb_memory_usage><used>8 MiB</used></fb_memory_usage>"
            "</mig_device></mig_devices><fb_memory_usage>",
            1,
        )
        .replace("<gpu_util>0 %</gpu_util>", "<gpu_util>N/A</gpu_util>", 1)
    )
    rec = parse_xml(xml)[0]
    assert rec[G + "mig_devices.mig_device.1.fb_memory_usage.used"] == "8 MiB"
    row = parse_record(rec)
    assert row[FEATURES.index(G + "fb_memory_usage.used")] == 0
    assert math.isnan(row[FEATURES.index(G + "utilization.gpu_util")])
