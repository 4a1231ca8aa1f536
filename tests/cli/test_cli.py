"""The `eomt` command line: info and convert."""

from __future__ import annotations

import torch
from helpers import make_reference, save_reference

from eomt import EomtConfig, EomtForUniversalSegmentation
from eomt.cli.commands import main


def test_info_reports_the_architecture_of_the_large_default(tmp_path, capsys):
    EomtConfig(num_labels=133).save_pretrained(tmp_path)  # the coco_panoptic_eomt_large_640 layout
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "24 blocks, hidden 1024, 16 heads" in out and "200, in the last 4 blocks" in out
    params = float(out.split("parameters")[1].split("M")[0])
    assert 310 < params < 330  # the paper's L: 316M


def test_convert_authors_file_to_a_directory_transformers_loads(tmp_path, capsys):
    ref = make_reference("eomt", hidden_size=128, num_attention_heads=2)
    save_reference(ref, tmp_path / "ref", probs=0.0)
    ours = EomtForUniversalSegmentation.from_pretrained(tmp_path / "ref")
    assert main(["convert", str(tmp_path / "ref"), str(tmp_path / "out")]) == 0
    again = EomtForUniversalSegmentation.from_pretrained(tmp_path / "out")
    pixels = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(again(pixels).masks_queries_logits, ours(pixels).masks_queries_logits)


def test_errors_are_one_line_with_exit_code_1(tmp_path, capsys):
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"\x00" * 10)
    assert main(["convert", str(bad), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("eomt convert: error:") and str(bad) in err and "\n" not in err
    assert not (tmp_path / "out").exists()
