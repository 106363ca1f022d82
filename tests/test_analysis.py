"""
tools/analyze_model.py: parameters and FLOPs per part, anchors per level, yaml or .py config.
"""
import importlib.util

from detectron2.modeling import build_model

from retina_plugin.experiments.model_analysis import analyze_model

from .conftest import CONFIGS, REPO_ROOT, load_cfg


def _tool():
    spec = importlib.util.spec_from_file_location("analyze_model", REPO_ROOT / "tools" / "analyze_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parts_add_up_and_match_the_arithmetic():
    model = build_model(load_cfg())  # tiny: 64 channels, 2 head convs, A = 9, K = 4
    result = analyze_model(model, 128, 128)
    params = [p for p, _ in result["parts"].values()]
    assert sum(params) == result["total"][0] == sum(p.numel() for p in model.parameters())
    assert model.training  # left as it was
    # P3..P7 of a 128-px image: 16, 8, 4, 2, 1 cells a side, 9 anchors each.
    assert [(lvl, h, w, n) for lvl, h, w, n in result["anchors"]] == [
        ("p3", 16, 16, 2304), ("p4", 8, 8, 576), ("p5", 4, 4, 144), ("p6", 2, 2, 36), ("p7", 1, 1, 9)
    ]
    # Box subnet: per cell, 2 convs 64->64 and one 64->36, 3x3 (multiply-adds), plus GN.
    cells = 256 + 64 + 16 + 4 + 1
    conv_flops = cells * 9 * 64 * (2 * 64 + 36)
    box_flops = result["parts"]["box subnet"][1]
    assert conv_flops <= box_flops <= 1.05 * conv_flops
    cls_flops = result["parts"]["classification subnet"][1]
    assert cls_flops == box_flops  # K * A = 36 = 4 * A outputs in both
    assert sum(f for _, f in result["parts"].values()) <= result["total"][1]


def test_tool_takes_yaml_and_py_configs(capsys):
    tool = _tool()
    table_py = tool.main(["--config-file", str(CONFIGS / "demo_R18_cpu.py"), "--size", "128", "160"])
    assert "Input 128 x 160" in table_py and "| p3 | 16 x 20 | 2880 |" in table_py
    table_yaml = tool.main(["--config-file", str(CONFIGS / "demo_R18_cpu.yaml"), "--size", "128", "160"])
    assert table_yaml == table_py  # same model either way
    assert "| classification subnet |" in capsys.readouterr().out
