"""Plugin mode: `custom_imports = dict(imports=['rewardpatch.plugin'])` beside a pip-installed MMSeg.

Each test runs a fresh interpreter whose import path holds this checkout of rewardpatch
and nothing else, so `import mmseg` finds the MMSeg installed in the environment (1.2.2
in the test interpreter's, 0.30.0 in the 0.x stack's), as a user's would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Sequence, cast

import pytest

from conftest import copy_checkout
from rewardpatch.head_index import COMPATIBLE
from rewardpatch.planning import ApplyOptions, list_heads, plan_apply
from rewardpatch.tree import MMSegTree

REPO = Path(__file__).resolve().parent.parent
LOSSES = {"CrossEntropyRewardLoss", "IoUMetricLoss"}


def run(code: str, cwd: Path, path: Sequence[Path] = (), python: str = sys.executable) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter whose import path is `path`, then this rewardpatch; no bytecode written."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*path, REPO])), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def expected_names(pristine, version: str) -> set[str]:
    """What `list-heads` says apply gives the release's tree: Reward<X> for each compatible head, and the losses."""
    heads = list_heads(MMSegTree.open(pristine(version)))
    return {cast(str, h.reward_name) for h in heads if h.status == COMPATIBLE} | LOSSES


CONFIG_1X = """
import json
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings
cfg = Config(dict(custom_imports=dict(imports=['rewardpatch.plugin'], allow_failed_imports=False)))
import_modules_from_strings(**cfg.custom_imports)
init_default_scope('mmseg')
import mmseg
from mmseg.registry import MODELS
head = MODELS.build(dict(type='RewardFCNHead', in_channels=8, channels=4, num_classes=3, num_convs=1,
                         reward_cfg=dict(mode='reinforce')))
import rewardpatch.plugin as plugin
names = sorted(n for n in MODELS.module_dict if n.startswith('Reward') or n in %r)
print(json.dumps(dict(mmseg=mmseg.__file__, names=names, registered=list(plugin.REGISTERED),
                      module=type(head).__module__, base=type(head).__mro__[1].__name__)))
""" % sorted(LOSSES)


def test_the_config_line_registers_what_apply_would_create_for_1_2_2(tmp_path, pristine, stack):
    # the installed package, not this process's mmseg (the `patched_tree` fixture of another
    # test module may have put a patched checkout first on sys.path)
    distribution = metadata.distribution("mmsegmentation")
    installed = Path(distribution.locate_file("mmseg")).resolve()
    before = snapshot(installed)
    listing = sorted(p.name for p in installed.parent.iterdir())
    report = json.loads(last_line(run(CONFIG_1X, tmp_path)))
    assert Path(report["mmseg"]).parent.resolve() == installed
    assert distribution.version == "1.2.2"
    assert set(report["names"]) == expected_names(pristine, "1.2.2")
    assert set(report["registered"]) == set(report["names"])
    assert report["module"] == "mmseg.models.decode_heads.reward_fcn_head"
    assert report["base"] == "RewardDecodeHead"
    assert snapshot(installed) == before, "the installed mmseg changed"
    assert sorted(p.name for p in installed.parent.iterdir()) == listing


# Loss values and logits gradients of reward heads, for two reward modes and two heads (one
# derived from the other); `{setup}` imports the reward classes, either way.
HEADS = "(('RewardFCNHead', dict(num_convs=1)), ('RewardPSPHead', dict(pool_scales=(1, 2))))"
NUMBERS_1X = """
import sys, torch
{setup}
from mmengine.registry import init_default_scope
init_default_scope('mmseg')
import mmseg.models
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
out = dict(mmseg=mmseg.__file__)
for head_type, extra in {heads}:
    for mode in ('local', 'reinforce', 'weighted_ce'):
        torch.manual_seed(0)
        head = MODELS.build(dict(type=head_type, in_channels=8, channels=4, num_classes=5,
                                 reward_cfg=dict(mode=mode), **extra))
        generator = torch.Generator().manual_seed(1)
        logits = torch.randn(2, 5, 16, 16, generator=generator).requires_grad_()
        labels = torch.randint(0, 5, (2, 16, 16), generator=generator)
        labels[0, :3] = 255
        samples = [SegDataSample(gt_sem_seg=PixelData(data=label[None])) for label in labels]
        torch.manual_seed(2)
        losses = head.loss_by_feat(logits, samples)
        sum(v for k, v in losses.items() if k.startswith('loss')).backward()
        out[head_type, mode] = dict(losses={{k: v.detach() for k, v in losses.items()}}, grad=logits.grad)
torch.save(out, sys.argv[1] if len(sys.argv) > 1 else {out!r})
print('ok')
"""

NUMBERS_0X = """
import sys, torch
{setup}
import mmseg.models
from mmseg.models import build_head
out = dict(mmseg=mmseg.__file__)
for head_type, extra in {heads}:
    for mode in ('local', 'reinforce', 'weighted_ce'):
        torch.manual_seed(0)
        head = build_head(dict(type=head_type, in_channels=8, channels=4, num_classes=5,
                               reward_cfg=dict(mode=mode), **extra))
        generator = torch.Generator().manual_seed(1)
        logits = torch.randn(2, 5, 16, 16, generator=generator).requires_grad_()
        labels = torch.randint(0, 5, (2, 1, 16, 16), generator=generator)
        labels[0, :, :3] = 255
        torch.manual_seed(2)
        losses = head.losses(logits, labels)
        sum(v for k, v in losses.items() if k.startswith('loss')).backward()
        out[head_type, mode] = dict(losses={{k: v.detach() for k, v in losses.items()}}, grad=logits.grad)
torch.save(out, {out!r})
print('ok')
"""


def compare_numbers(plugin_file: Path, patched_file: Path, tree: Path, cases: int = 6) -> None:
    import torch

    plugin, patched = torch.load(plugin_file), torch.load(patched_file)
    assert Path(patched.pop("mmseg")).is_relative_to(tree)
    assert not Path(plugin.pop("mmseg")).is_relative_to(tree)
    assert plugin.keys() == patched.keys() and len(plugin) == cases
    for key in plugin:
        ours, theirs = plugin[key], patched[key]
        assert ours["losses"].keys() == theirs["losses"].keys(), key
        for name in ours["losses"]:
            assert torch.equal(ours["losses"][name], theirs["losses"][name]), (key, name)
        assert torch.equal(ours["grad"], theirs["grad"]), key
        assert ours["grad"].abs().sum() > 0, key


@pytest.fixture(scope="module")
def patched_1x(tmp_path_factory) -> Path:
    tree = copy_checkout("1.2.2", tmp_path_factory.mktemp("plugin") / "mmsegmentation")
    plan_apply(MMSegTree.open(tree)).execute()
    return tree


def test_plugin_heads_give_the_patched_tree_s_numbers_bit_for_bit_on_1_2_2(tmp_path, patched_1x, stack):
    plugin_file, patched_file = tmp_path / "plugin.pt", tmp_path / "patched.pt"
    plugin = NUMBERS_1X.format(heads=HEADS, setup="import mmseg, rewardpatch.plugin", out=str(plugin_file))
    last_line(run(plugin, tmp_path))
    patched = NUMBERS_1X.format(heads=HEADS, setup="import mmseg", out=str(patched_file))
    last_line(run(patched, patched_1x, [patched_1x]))
    compare_numbers(plugin_file, patched_file, patched_1x)


def test_plugin_heads_give_the_patched_tree_s_numbers_bit_for_bit_on_0_30_0(tmp_path, pristine, python_0x):
    tree = copy_checkout("0.30.0", tmp_path / "mmsegmentation")
    plan_apply(MMSegTree.open(tree)).execute()
    plugin_file, patched_file = tmp_path / "plugin.pt", tmp_path / "patched.pt"
    names = (
        "import json, mmseg, rewardpatch.plugin as plugin\n"
        "print(json.dumps([mmseg.__version__, mmseg.__file__, list(plugin.REGISTERED)]))"
    )
    version, where, registered = json.loads(last_line(run(names, tmp_path, python=python_0x)))
    assert version == "0.30.0" and not Path(where).is_relative_to(tree)
    assert set(registered) == expected_names(pristine, "0.30.0")
    plugin = NUMBERS_0X.format(heads=HEADS, setup="import mmseg, rewardpatch.plugin", out=str(plugin_file))
    last_line(run(plugin, tmp_path, python=python_0x))
    patched = NUMBERS_0X.format(heads=HEADS, setup="import mmseg", out=str(patched_file))
    last_line(run(patched, tree, [tree], python=python_0x))
    compare_numbers(plugin_file, patched_file, tree)


def test_a_patched_tree_keeps_its_own_classes(tmp_path, patched_1x, stack):
    code = (
        "import json, rewardpatch.plugin as plugin\n"
        "from mmseg.registry import MODELS\n"
        "print(json.dumps([list(plugin.REGISTERED), MODELS.get('RewardFCNHead').__module__,"
        " MODELS.get('RewardFCNHead').__init__.__code__.co_filename]))"
    )
    registered, module, filename = json.loads(last_line(run(code, tmp_path, [patched_1x])))
    assert registered == []
    assert module == "mmseg.models.decode_heads.reward_fcn_head"
    assert Path(filename).is_relative_to(patched_1x)


@pytest.mark.parametrize(
    "init, message",
    [
        ("raise ImportError('no torch here')", "MMSegmentation is not importable (ImportError: no torch here)"),
        ("__version__ = '9.9.9'", "MMSegmentation 9.9.9 at "),
        ("__version__ = '1.2.2+fork'", "is not supported (supported: 0.6.0 to 0.30.0, 1.0.0rc0 to 1.2.2)"),
    ],
)
def test_the_plugin_refuses_in_one_line(tmp_path, init, message):
    fake = tmp_path / "site" / "mmseg"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(init + "\n")
    (fake / "version.py").write_text("__version__ = '9.9.9'\n")
    result = run("import rewardpatch.plugin", tmp_path, [tmp_path / "site"])
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("rewardpatch.plugin.PluginError: ")
    assert message in error


DDP = """
import hashlib, inspect, json, os
import torch.distributed as dist
dist.init_process_group('gloo')
import rewardpatch.plugin as plugin
from mmseg.registry import MODELS
mine = {name: hashlib.sha256(inspect.getsource(inspect.getmodule(MODELS.get(name))).encode()).hexdigest()
        for name in plugin.REGISTERED}
every = [None] * dist.get_world_size()
dist.all_gather_object(every, mine)
if dist.get_rank() == 0:
    print(json.dumps(every), flush=True)
dist.barrier()
dist.destroy_process_group()
os._exit(0)  # as workers/ddp_reward_training.py: a gloo process can abort in interpreter teardown
"""


def test_every_ddp_rank_registers_the_same_classes_from_the_same_code(tmp_path, stack):
    script = tmp_path / "ranks.py"
    script.write_text(DDP)
    code = f"import sys; sys.argv = ['torchrun', '--standalone', '--nproc_per_node', '2', {str(script)!r}]\n" \
        "from torch.distributed.run import main; main()"
    ranks = json.loads(last_line(run(code, tmp_path)))
    assert len(ranks) == 2 and ranks[0] == ranks[1]
    assert "RewardFCNHead" in ranks[0] and len(ranks[0]) == 29


# A project's own head, registered before rewardpatch.plugin (custom_imports order)
PROJECT_HEAD = """
import torch.nn as nn

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS


def _conv(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1)


@MODELS.register_module()
class MyHead(BaseDecodeHead):

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = _conv(self.in_channels, self.channels)

    def forward(self, inputs):
        return self.cls_seg(self.conv(self._transform_inputs(inputs)))
"""


def project_package(tmp_path: Path, package: str, module: str, source: str) -> Path:
    """A folder to put on PYTHONPATH holding `package` with one module, `module`, of `source`."""
    root = tmp_path / "project"
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text("")
    (root / package / f"{module}.py").write_text(source)
    return root


def test_a_project_head_registered_before_the_plugin_gets_the_reward_version_apply_would_give_it(tmp_path, stack):
    project = project_package(tmp_path, "myproj", "my_head", PROJECT_HEAD)
    tree = copy_checkout("1.2.2", tmp_path / "mmsegmentation")
    heads = tree / "mmseg/models/decode_heads"
    (heads / "my_head.py").write_text(PROJECT_HEAD)
    with (heads / "__init__.py").open("a") as init:
        init.write("from .my_head import MyHead  # noqa: F401\n")
    plan_apply(MMSegTree.open(tree), ApplyOptions(allow_dirty=True)).execute()
    assert (heads / "reward_my_head.py").is_file()

    cases = "(('RewardMyHead', dict()),)"
    setup = (
        "from mmengine.utils import import_modules_from_strings\n"
        "import_modules_from_strings(['myproj.my_head', 'rewardpatch.plugin'], allow_failed_imports=False)\n"
        "import mmseg, rewardpatch.plugin as plugin\n"
        "assert 'RewardMyHead' in plugin.REGISTERED, plugin.REGISTERED"
    )
    plugin_file, patched_file = tmp_path / "plugin.pt", tmp_path / "patched.pt"
    last_line(run(NUMBERS_1X.format(heads=cases, setup=setup, out=str(plugin_file)), tmp_path, [project]))
    last_line(run(NUMBERS_1X.format(heads=cases, setup="import mmseg", out=str(patched_file)), tree, [tree]))
    compare_numbers(plugin_file, patched_file, tree, cases=3)


PACKAGE_IMPORT_HEADS = """
from mmseg.models.decode_heads import FCNHead
from mmseg.registry import MODELS


@MODELS.register_module()
class MyFCNHead(FCNHead):
    pass


@MODELS.register_module()
class DropsLabelsHead(FCNHead):

    def loss_by_feat(self, seg_logits, batch_data_samples):
        return {}
"""


def test_project_heads_derive_from_mmseg_heads_imported_from_the_package_and_refusals_are_warned(tmp_path, stack):
    project = project_package(tmp_path, "myproj", "pkg_head", PACKAGE_IMPORT_HEADS)
    code = (
        "import json, myproj.pkg_head, rewardpatch.plugin as plugin\n"
        "from mmseg.registry import MODELS\n"
        "head = MODELS.build(dict(type='RewardMyFCNHead', in_channels=8, channels=4, num_classes=3, num_convs=1))\n"
        "print(json.dumps([sorted(n for n in plugin.REGISTERED if 'My' in n or 'Drops' in n),"
        " [c.__name__ for c in type(head).__mro__[1:3]]]))"
    )
    result = run(code, tmp_path, [project])
    registered, bases = json.loads(last_line(result))
    assert registered == ["RewardMyFCNHead"]
    assert bases == ["RewardFCNHead", "RewardDecodeHead"]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("rewardpatch: warning:")]
    assert len(warnings) == 1 and "DropsLabelsHead" in warnings[0] and "the reward loss would never run" in warnings[0]


PROJECT_HEADS_0X = """
import torch.nn as nn

from mmseg.models.builder import HEADS
from mmseg.models.decode_heads import FCNHead
from mmseg.models.decode_heads.decode_head import BaseDecodeHead


@HEADS.register_module()
class MyHead(BaseDecodeHead):

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = nn.Conv2d(self.in_channels, self.channels, 3, padding=1)

    def forward(self, inputs):
        return self.cls_seg(self.conv(self._transform_inputs(inputs)))


@HEADS.register_module()
class MyFCNHead(FCNHead):
    pass
"""


def test_project_heads_get_reward_versions_on_0_30_0(tmp_path, python_0x):
    project = project_package(tmp_path, "myproj0", "my_head", PROJECT_HEADS_0X)
    code = (
        "import json, torch, myproj0.my_head, rewardpatch.plugin as plugin\n"
        "from mmseg.models import build_head\n"
        "found = {}\n"
        "for name in ('RewardMyHead', 'RewardMyFCNHead'):\n"
        "    head = build_head(dict(type=name, in_channels=8, channels=4, num_classes=3))\n"
        "    logits = torch.randn(2, 3, 8, 8, requires_grad=True)\n"
        "    losses = head.losses(logits, torch.randint(0, 3, (2, 1, 8, 8)))\n"
        "    losses['loss_ce_reward'].backward()\n"
        "    found[name] = [type(head).__mro__[1].__name__, bool(logits.grad.abs().sum() > 0)]\n"
        "print(json.dumps([sorted(n for n in plugin.REGISTERED if 'My' in n), found]))"
    )
    registered, found = json.loads(last_line(run(code, tmp_path, [project], python=python_0x)))
    assert registered == ["RewardMyFCNHead", "RewardMyHead"]
    assert found == {"RewardMyHead": ["RewardDecodeHead", True], "RewardMyFCNHead": ["RewardFCNHead", True]}


RELATIVE_LAYERS = """
import torch.nn as nn


def conv(cin, cout):
    return nn.Conv2d(cin, cout, 3, padding=1)
"""

RELATIVE_HEAD = """
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS

from .layers import conv
from ..shared import scale


@MODELS.register_module()
class RelativeHead(BaseDecodeHead):

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = conv(self.in_channels, self.channels)

    def forward(self, inputs):
        return self.cls_seg(scale(self.conv(self._transform_inputs(inputs))))
"""

LATE_HEADS = """
from mmengine.registry import Registry
from mmseg.models.decode_heads import FCNHead
from mmseg.registry import MODELS as MMSEG_MODELS

MODELS = Registry('model', parent=MMSEG_MODELS, scope='myproj')


@MMSEG_MODELS.register_module()
class LateHead(FCNHead):
    pass


@MODELS.register_module()
class OwnRegistryHead(FCNHead):
    pass


@MMSEG_MODELS.register_module()
class NoLossHead(FCNHead):

    def loss_by_feat(self, seg_logits, batch_data_samples):
        return {}


class NotAHead:
    pass
"""


def relative_project(tmp_path: Path) -> Path:
    """myproj/{shared.py, models/{layers.py, heads.py, late.py}}: heads with relative imports, up one level too."""
    root = tmp_path / "project"
    models = root / "myproj" / "models"
    models.mkdir(parents=True)
    for init in (root / "myproj" / "__init__.py", models / "__init__.py"):
        init.write_text("")
    (root / "myproj" / "shared.py").write_text("def scale(x):\n    return x * 0.5\n")
    (models / "layers.py").write_text(RELATIVE_LAYERS)
    (models / "heads.py").write_text(RELATIVE_HEAD)
    (models / "late.py").write_text(LATE_HEADS)
    return root


def test_project_heads_with_relative_imports_get_reward_versions_with_the_same_numbers(tmp_path, stack):
    project = relative_project(tmp_path)
    code = (
        "import json, torch, myproj.models.heads, rewardpatch.plugin as plugin\n"
        "from mmseg.registry import MODELS\n"
        "from myproj.models.heads import RelativeHead\n"
        "found = {}\n"
        "for name in ('RelativeHead', 'RewardRelativeHead'):\n"
        "    torch.manual_seed(0)\n"
        "    head = MODELS.build(dict(type=name, in_channels=8, channels=4, num_classes=3))\n"
        "    torch.manual_seed(1)\n"
        "    found[name] = head.forward([torch.randn(2, 8, 8, 8)]).tolist()\n"
        "reward = MODELS.get('RewardRelativeHead')\n"
        "print(json.dumps(['RewardRelativeHead' in plugin.REGISTERED, "
        "found['RelativeHead'] == found['RewardRelativeHead'],\n"
        "                  reward.__module__, RelativeHead.__module__]))"
    )
    registered, same, module, source = json.loads(last_line(run(code, tmp_path, [project])))
    assert registered and same
    assert module == "mmseg.models.decode_heads.reward_plugin_myproj_models_heads"
    assert source == "myproj.models.heads"


def test_add_heads_names_heads_registered_after_the_import_or_in_a_project_registry(tmp_path, stack):
    project = relative_project(tmp_path)
    code = (
        "import json, rewardpatch.plugin as plugin\n"
        "import myproj.models.late as late\n"
        "before = set(plugin.registered())\n"
        "out = [plugin.add_heads('myproj.models.late.LateHead'), plugin.add_heads(late.OwnRegistryHead),\n"
        "       plugin.add_heads('myproj.models.late'), plugin.add_heads(late.LateHead)]\n"
        "from mmseg.registry import MODELS\n"
        "own = late.MODELS.build(dict(type='RewardOwnRegistryHead', in_channels=8, channels=4, num_classes=3))\n"
        "errors = []\n"
        "for bad in ('myproj.models.late.NotAHead', 'myproj.models.late.Nope', 'myproj.nope', late.NoLossHead, 3):\n"
        "    try:\n"
        "        plugin.add_heads(bad)\n"
        "    except ImportError as exc:\n"
        "        errors.append(f'{type(exc).__name__}: {exc}')\n"
        "print(json.dumps([out, sorted(set(plugin.registered()) - before), type(own).__mro__[1].__name__, errors,\n"
        "                  'RewardLateHead' in MODELS.module_dict, "
        "'RewardOwnRegistryHead' in late.MODELS.module_dict]))"
    )
    result = run(code, tmp_path, [project])
    out, added, base, errors, in_mmseg, in_own = json.loads(last_line(result))
    assert out == [["RewardLateHead"], ["RewardOwnRegistryHead"], ["RewardLateHead", "RewardOwnRegistryHead"],
                   ["RewardLateHead"]]
    assert added == ["RewardLateHead", "RewardOwnRegistryHead"]  # the module planned once, NoLossHead refused
    assert base == "RewardFCNHead" and in_mmseg and in_own
    assert errors == [
        "PluginError: myproj.models.late.NotAHead is not a decode head (no BaseDecodeHead in its bases)",
        "PluginError: myproj.models.late.Nope: no such module, and myproj.models.late has no class Nope",
        "PluginError: myproj.nope: no such module, and myproj has no class nope",
        f"PluginError: NoLossHead ({project}/myproj/models/late.py) cannot get a reward version: "
        "NoLossHead.loss_by_feat computes its own loss without handing batch_data_samples to super(): "
        "the reward loss would never run",
        "PluginError: add_heads takes classes, modules or dotted names, not 3",
    ]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("rewardpatch: warning:")]
    assert len(warnings) == 1 and "NoLossHead" in warnings[0]  # named as part of the module: warned, not raised


def test_heads_a_project_registers_in_a_child_registry_before_the_import_are_found(tmp_path, stack):
    project = relative_project(tmp_path)
    code = (
        "import json, myproj.models.late, rewardpatch.plugin as plugin\n"
        "print(json.dumps(sorted(n for n in plugin.REGISTERED if 'Late' in n or 'Own' in n or 'NoLoss' in n)))"
    )
    assert json.loads(last_line(run(code, tmp_path, [project]))) == ["RewardLateHead", "RewardOwnRegistryHead"]
