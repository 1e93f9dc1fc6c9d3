"""ONNX export: parity against PyTorch at new shapes, drift detection, atomic publication."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from myelin_training import export


def tiny_spec(module: nn.Module) -> export.GraphExport:
    def fresh(g: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (torch.randn(int(torch.randint(1, 9, (1,), generator=g)), 6, generator=g),)

    return export.GraphExport(
        module=module,
        example_inputs=(torch.randn(2, 6),),
        input_names=["x"],
        output_names=["y"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},),
        parity_inputs=fresh,
    )


def test_export_checks_parity_at_new_batch_sizes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    report, signature = export.export_graph(tiny_spec(module), tmp_path / "m.onnx")
    assert report.max_abs_diff < 1e-5
    batch_sizes = {shape[0][0] for shape in report.shapes}
    assert batch_sizes - {2}, "parity must be checked at batch sizes other than the example's"
    assert signature["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 6]}]
    assert signature["outputs"][0]["name"] == "y"


def test_drift_fails_the_parity_check(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(6, 3))
    spec = tiny_spec(module)
    path = tmp_path / "m.onnx"
    export.export_graph(spec, path)
    with torch.no_grad():
        module[0].bias += 0.01  # PyTorch now disagrees with the exported file
    with pytest.raises(export.ExportParityError, match="drifts"):
        export.check_parity(spec, path)


def test_publish_allocates_versions_atomically(tmp_path: Path) -> None:
    for expected in (1, 2):
        staged = export.staging_dir(tmp_path, "toy")
        (staged / "model.onnx").write_bytes(b"x")
        target = export.publish_version(tmp_path, "toy", staged, {"family": "classifier", "graphs": {}})
        assert target == tmp_path / "toy" / str(expected)
        manifest = json.loads((target / "model.json").read_text())
        assert manifest["version"] == expected and manifest["name"] == "toy"
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == ["1", "2"]


@pytest.mark.parametrize("name", ["../evil", "a/b", "", "UPPER", "x" * 200])
def test_model_names_are_checked(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="model name"):
        export.staging_dir(tmp_path, name)
