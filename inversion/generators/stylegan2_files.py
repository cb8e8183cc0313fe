"""StyleGAN2 checkpoints as users hold them, read without executing anything from the file.

**NVIDIA pickles** (stylegan2-ada-pytorch and stylegan3 repositories: ``network-snapshot-*.pkl``,
``ffhq.pkl``, ...). They are Python pickles that embed the source code of their modules, which
NVIDIA's loader executes. Ours reads them with a restricted unpickler that accepts only the globals
it knows: the tensor and storage rebuilders (storages are read back with ``weights_only=True``),
``collections.OrderedDict``, numeric numpy scalars and dtypes (``numpy.core`` and ``numpy._core``),
``dnnlib.util.EasyDict`` as a dict, and the persistence hook, replaced by a stub that keeps the
stored state and never looks at the embedded source. Any other global is refused, naming it, before
anything is built. The ``G_ema`` network's parameters, buffers and per-layer settings (gains,
clamps, architecture) are then read into :class:`StyleGAN2Generator` and checked strictly.
Conditional generators (``c_dim > 0``), StyleGAN3 and non-``skip`` architectures are refused in one
line.

**rosinality checkpoints** (rosinality/stylegan2-pytorch and the projects built on it: pSp, e4e,
ReStyle): ``torch.save({"g_ema": ..., "args": ..., "latent_avg": ...})`` or a bare state dict,
read with ``weights_only=True``; the configuration comes from the shapes, every key is checked.
Without a stored ``latent_avg`` the ``w_avg`` used by truncation is the mean of the mapping of
10,000 seeded z (:data:`W_AVG_SAMPLES`), and the JSON says so.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inversion.generators.stylegan2 import ARCHITECTURES, StyleGAN2Generator, fir_filter
from mganprior.core.errors import InputError
from mganprior.core.weights import build_checked, check_backed, shorten

W_AVG_SAMPLES = 10_000


# -- the restricted unpickler ---------------------------------------------------------------------
class Refused(pickle.UnpicklingError):
    """Something in the pickle that this reader does not build."""


class PersistentObject:
    """What NVIDIA's persistence hook would have rebuilt: the class name and its stored state
    (``__dict__``). The embedded module source is dropped, never read."""

    def __init__(self, class_name: str, state: dict[str, Any]) -> None:
        self.class_name = class_name
        self.state = state

    def __repr__(self) -> str:
        return f"PersistentObject({self.class_name})"


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or meta.get("type") != "class" or \
            not isinstance(meta.get("class_name"), str) or not isinstance(meta.get("state"), dict):
        raise Refused("a persistent object whose description is not a class with a stored "
                      "state")
    return PersistentObject(meta["class_name"], meta["state"])


class EasyDict(dict):
    """``dnnlib.util.EasyDict`` read as a plain dict."""


def _load_storage(data: bytes) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *extra):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())


def _rebuild_parameter(data, requires_grad=False, hooks=None, *extra):
    return data


def _numpy_scalar(dtype: np.dtype, data: bytes = b"") -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc":
        raise Refused(f"a numpy scalar of dtype {dtype}")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(spec)
    if dtype.kind not in "biufcb?":
        raise Refused(f"numpy dtype {dtype}")
    return dtype


class CheckedArray(np.ndarray):
    """A numpy array read from a pickle: its state must be plain numeric bytes of exactly the
    size its shape declares (no object or structured dtype, no list of elements)."""

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[1], tuple)
                and all(isinstance(n, int) and n >= 0 for n in state[1])
                and isinstance(state[2], np.dtype) and state[2].kind in "biufc"
                and isinstance(state[4], bytes)):
            raise Refused("a numpy array whose state is not numeric bytes")
        if math.prod(state[1]) * state[2].itemsize != len(state[4]):
            raise Refused(f"a numpy array of shape {list(state[1])} over {len(state[4])} bytes")
        super().__setstate__(state)


def _numpy_reconstruct(subtype: Any, shape: Any, dtype: Any) -> CheckedArray:
    """numpy's ``_reconstruct``: an empty array that the pickle then fills (``BUILD``)."""
    if not (isinstance(subtype, type) and issubclass(subtype, np.ndarray)) or \
            tuple(shape) != (0,):
        raise Refused("a numpy array that does not start empty")
    return np.empty(0, dtype=np.uint8).view(CheckedArray)


SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): OrderedDict,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
}


def fresh(allowed: Any) -> Any:
    """A throwaway stand-in for an allowed global: a pickle may ``BUILD`` state onto any object
    it holds, the globals it names included, and must not change the reader's own classes and
    functions for the rest of the process. A class becomes a new subclass, a function a new
    wrapper; built-in types refuse attributes by themselves."""
    if isinstance(allowed, type):
        return allowed if allowed.__module__ == "collections" else \
            type(allowed.__name__, (allowed,), {})

    def stand_in(*args: Any, **kwargs: Any) -> Any:
        return allowed(*args, **kwargs)
    return stand_in


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only what :data:`SAFE_GLOBALS` allows."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = SAFE_GLOBALS.get((module, name))
        if allowed is None:
            raise Refused(f"it refers to {module}.{name}, which this reader does not accept")
        return fresh(allowed)

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("it uses persistent ids (a torch zip checkpoint?)")


def read_restricted_pickle(path: str | Path) -> Any:
    """The content of a pickle file, built from :data:`SAFE_GLOBALS` only; anything else is an
    InputError naming what was refused."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(handle).load()
    except Refused as err:
        raise InputError(f"{path} was refused: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, RuntimeError, OSError, RecursionError, MemoryError, OverflowError) as err:
        raise InputError(f"{path} is damaged or not a pickle ({type(err).__name__}: "
                         f"{str(err)[:200]})") from None


# -- NVIDIA G_ema to our module -------------------------------------------------------------------
def _children(obj: PersistentObject) -> dict[str, Any]:
    return dict(obj.state.get("_modules") or {})


def _flatten(obj: PersistentObject, prefix: str, out: dict[str, torch.Tensor],
             settings: dict[str, dict[str, Any]]) -> None:
    """``state_dict``-style tensors of a persistent module tree, and each module's plain settings
    (``settings[prefix]``: its non-tensor attributes)."""
    if not isinstance(obj, PersistentObject):
        raise InputError(f"module {prefix or 'G_ema'} is a {type(obj).__name__}, not a stored "
                         "network module")
    state = obj.state
    for part in ("_parameters", "_buffers", "_modules"):
        if not isinstance(state.get(part) or {}, dict):
            raise InputError(f"module {prefix or 'G_ema'}: {part} is a "
                             f"{type(state.get(part)).__name__}, not a dict of named entries")
    non_persistent = set(state.get("_non_persistent_buffers_set") or ())
    for name, value in {**(state.get("_parameters") or {}),
                        **{k: v for k, v in (state.get("_buffers") or {}).items()
                           if k not in non_persistent}}.items():
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise InputError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
        out[prefix + name] = value
    settings[prefix.rstrip(".")] = {k: v for k, v in state.items()
                                    if isinstance(v, int | float | str | bool | type(None))}
    settings[prefix.rstrip(".")]["__class__"] = obj.class_name
    for name, child in _children(obj).items():
        if child is not None:
            _flatten(child, f"{prefix}{name}.", out, settings)


def _number(settings: dict[str, Any], key: str, default: Any = None) -> Any:
    value = settings.get(key, default)
    return value.item() if isinstance(value, np.generic) else value


def _whole(settings: dict[str, Any], key: str, source: str, default: Any = None) -> int:
    """An integer setting of the stored network, checked (a missing, non-integer, NaN or
    negative value is one line naming it)."""
    value = _number(settings, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"{source}: G_ema's {key} must be a whole number, got {value!r}",
                         field=key)
    return value


def from_nvidia(content: Any, source: str) -> StyleGAN2Generator:
    """Our generator from an NVIDIA pickle's content (``G_ema``, else ``G``)."""
    if not isinstance(content, dict):
        raise InputError(f"{source} holds a {type(content).__name__}, not NVIDIA's snapshot "
                         "dict (G, D, G_ema, ...)")
    network = content.get("G_ema", content.get("G"))
    if not isinstance(network, PersistentObject):
        raise InputError(f"{source} has no G_ema or G network (keys: "
                         f"{', '.join(map(str, content))})")
    if network.class_name != "Generator":
        raise InputError(f"{source}: G_ema is a {network.class_name}, not a Generator")
    tensors: dict[str, torch.Tensor] = {}
    settings: dict[str, dict[str, Any]] = {}
    _flatten(network, "", tensors, settings)
    check_backed(tensors, source)  # before any tensor is compared or copied
    top = settings[""]
    kwargs = network.state.get("_init_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise InputError(f"{source}: G_ema's _init_kwargs is a {type(kwargs).__name__}, not a "
                         "dict")
    c_dim = _whole(top, "c_dim", source, kwargs.get("c_dim", 0) or 0)
    if any(name.startswith("synthesis.input") or re.match(r"synthesis\.L\d+_", name)
           for name in tensors):
        return _stylegan3(network, tensors, settings, c_dim, source).eval()
    resolution = _whole(top, "img_resolution", source, 0)
    blocks = [k for k in settings if re.fullmatch(r"synthesis\.b\d+", k)]
    architectures = {settings[block].get("architecture", "skip") for block in blocks}
    if len(architectures) > 1 or not architectures <= set(ARCHITECTURES):
        raise InputError(f"{source}: the synthesis blocks use the {sorted(map(str, architectures))}"
                         f" architecture(s); supported: one of {', '.join(ARCHITECTURES)}",
                         field="architecture")
    if _whole(top, "img_channels", source, 3) != 3:
        raise InputError(f"{source} makes {top.get('img_channels')}-channel images; only RGB")
    mapping = [k for k in settings if re.fullmatch(r"mapping\.fc\d+", k)]
    lr_multiplier = float(_number(settings.get("mapping.fc0", {}), "bias_gain", 0.01))
    clamps = {_number(settings[k], "conv_clamp") for k in settings
              if settings[k].get("__class__") in ("SynthesisLayer", "ToRGBLayer")}
    if len(clamps) > 1:
        raise InputError(f"{source} clamps its layers differently ({sorted(map(str, clamps))}); "
                         "only one conv_clamp for the whole network is supported")
    for name, options in settings.items():
        if options.get("__class__") == "SynthesisLayer" and \
                (options.get("activation", "lrelu") != "lrelu" or not options.get("use_noise", 1)
                 or options.get("kernel_size", 3) != 3):
            raise InputError(f"{source}: layer {name} is not a 3x3 leaky-ReLU layer with noise")
    clamp = clamps.pop() if clamps else None
    for name in [k for k in tensors if k.endswith("resample_filter")]:
        if not torch.allclose(tensors.pop(name).float(), fir_filter(), atol=1e-6):
            raise InputError(f"{source}: {name} is not the standard [1, 3, 3, 1] filter")
    missing = [f"synthesis.b{4 << k}.conv1.weight" for k in range(len(blocks))
               if f"synthesis.b{4 << k}.conv1.weight" not in tensors]
    if missing or not blocks:
        lacking = ", ".join(missing[:3]) or "its blocks"
        raise InputError(f"{source}: the synthesis network lacks {lacking}")
    channels = [int(tensors[f"synthesis.b{4 << k}.conv1.weight"].shape[0])
                for k in range(len(blocks))]
    if isinstance(clamp, bool) or not (clamp is None or isinstance(clamp, (int, float))):
        raise InputError(f"{source}: conv_clamp must be a number or None, got {clamp!r}")
    config = {"resolution": resolution, "z_dim": _whole(top, "z_dim", source),
              "w_dim": _whole(top, "w_dim", source), "channels": channels,
              "mapping_layers": len(mapping), "lr_multiplier": lr_multiplier,
              "conv_clamp": float(clamp) if clamp is not None else None,
              "architecture": architectures.pop() if architectures else "skip", "c_dim": c_dim}
    return _build(config, tensors, f"{source} (NVIDIA G_ema)").eval()


def _plain(value: Any, field: str, source: str) -> Any:
    """A stored setting as a plain Python number: numpy scalars unwrapped, a numpy pair of equal
    sizes (NVIDIA keeps [width, height]) as one number; a non-square pair is refused."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf" or value.size == 0 or value.size > 2 or \
                len(set(value.ravel().tolist())) != 1:
            raise InputError(f"{source}: {field} is {str(value.ravel()[:4].tolist())[:60]}; only "
                             "square layers with "
                             "one size are supported", field=field)
        return value.ravel()[0].item()
    return value.item() if isinstance(value, np.generic) else value


def _flag(value: Any, field: str, source: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InputError(f"{source}: {field} must be true or false", field=field)


def _settings_of(obj: Any, class_name: str, where: str, source: str) -> Callable[[str], Any]:
    """A reader of one stored StyleGAN3 module's settings as plain numbers (:func:`_plain`),
    after checking that the module is the ``class_name`` it must be."""
    if not isinstance(obj, PersistentObject) or obj.class_name != class_name:
        raise InputError(f"{source}: {where} is not a StyleGAN3 {class_name}")
    return lambda key: _plain(obj.state.get(key), f"{where}.{key}", source)


def _stylegan3_layer(obj: Any, name: str, source: str) -> Any:
    """One SynthesisLayer's declared sizes as a LayerSpec; its stored padding must be the one
    the sizes give (anything else is a configuration this reader does not support)."""
    from inversion.generators.stylegan3 import LayerSpec

    get = _settings_of(obj, "SynthesisLayer", f"synthesis.{name}", source)
    state = obj.state

    spec = LayerSpec(in_channels=get("in_channels"), out_channels=get("out_channels"),
                     in_size=get("in_size"), out_size=get("out_size"),
                     conv_kernel=get("conv_kernel"), up=get("up_factor"),
                     down=get("down_factor"), up_taps=get("up_taps"),
                     down_taps=get("down_taps"),
                     radial=_flag(get("down_radial"), f"synthesis.{name}.down_radial", source),
                     torgb=_flag(get("is_torgb"), f"synthesis.{name}.is_torgb", source))
    padding = state.get("padding")
    if padding is not None:
        stored = [_plain(p, f"synthesis.{name}.padding", source) for p in padding]
        if all(isinstance(p, int) for p in [*stored, spec.up, spec.down, spec.in_size,
                                             spec.out_size, spec.conv_kernel, spec.up_taps,
                                             spec.down_taps]) and \
                stored != [*spec.padding, *spec.padding]:
            raise InputError(f"{source}: synthesis.{name} pads by {stored}, not the "
                             f"{[*spec.padding, *spec.padding]} its sizes give; this layer "
                             "configuration is not supported", field="padding")
    return spec


def _stylegan3(network: PersistentObject, tensors: dict[str, torch.Tensor],
               settings: dict[str, dict[str, Any]], c_dim: int, source: str) -> Any:
    """Our StyleGAN3 from NVIDIA's ``networks_stylegan3.Generator``: the declared sizes read
    into specs and checked (:func:`check_specs`) before anything is built."""
    from inversion.generators.stylegan3 import InputSpec, StyleGAN3Generator, check_specs

    synthesis = _children(network).get("synthesis")
    if not isinstance(synthesis, PersistentObject):
        raise InputError(f"{source}: G_ema has no stored synthesis network")
    names = synthesis.state.get("layer_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputError(f"{source}: synthesis.layer_names is not a list of names")
    children = _children(synthesis)
    specs = [_stylegan3_layer(children.get(name), name, source) for name in names]
    number = _settings_of(children.get("input"), "SynthesisInput", "synthesis.input", source)
    input_spec = InputSpec(channels=number("channels"), size=number("size"),
                           sampling_rate=number("sampling_rate"),
                           bandwidth=number("bandwidth"))
    top = settings[""]
    clamps = {_number(settings[f"synthesis.{name}"], "conv_clamp") for name in names}
    if len(clamps) > 1:
        raise InputError(f"{source} clamps its layers differently ({sorted(map(str, clamps))}); "
                         "only one conv_clamp for the whole network is supported")
    if _whole(top, "img_channels", source, 3) != 3:
        raise InputError(f"{source} makes {top.get('img_channels')}-channel images; only RGB")
    config = {"resolution": _whole(top, "img_resolution", source, 0),
              "z_dim": _whole(top, "z_dim", source), "w_dim": _whole(top, "w_dim", source),
              "input": input_spec, "layers": specs,
              "mapping_layers": len([k for k in settings if re.fullmatch(r"mapping\.fc\d+", k)]),
              "lr_multiplier": float(_number(settings.get("mapping.fc0", {}), "bias_gain", 0.01)),
              "conv_clamp": clamps.pop() if clamps else None,
              "output_scale": _plain(settings["synthesis"].get("output_scale", 1.0),
                                     "synthesis.output_scale", source),
              "c_dim": c_dim}
    where = f"{source} (NVIDIA StyleGAN3 G_ema)"
    try:
        check_specs(config["resolution"], input_spec, specs)  # plain numbers, nothing built
        expected = [spec.name(i) for i, spec in enumerate(specs)]
        if names != expected:
            raise InputError(f"{source}: the synthesis layers are named {names[:3]}..., not "
                             f"{expected[:3]}... as their sizes give")
        return build_checked(lambda: StyleGAN3Generator(**config), tensors, where)
    except InputError as err:
        message = str(err)
        raise InputError(message if message.startswith(source) else f"{where}: {message}",
                         field=err.field) from None


MAX_WIDTH = 8192  # channels or latent sizes beyond this are no StyleGAN2
MAX_RESOLUTION = 4096
MAX_MAPPING_LAYERS = 64


def _check_config(config: dict[str, Any], source: str) -> None:
    """The declared sizes as plain numbers, before anything is built from them."""
    def whole(name: str, value: Any, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise InputError(f"{source}: {name} must be an integer in [1, {high}], got "
                             f"{value!r}", field=name)

    whole("resolution", config["resolution"], MAX_RESOLUTION)
    whole("z_dim", config["z_dim"], MAX_WIDTH)
    whole("w_dim", config["w_dim"], MAX_WIDTH)
    whole("mapping_layers", config["mapping_layers"], MAX_MAPPING_LAYERS)
    for width in config["channels"]:
        whole("channels", width, MAX_WIDTH)
    if config.get("c_dim", 0):
        whole("c_dim", config["c_dim"], MAX_WIDTH)
    if config.get("architecture", "skip") not in ARCHITECTURES:
        raise InputError(f"{source}: architecture must be one of {', '.join(ARCHITECTURES)}, "
                         f"got {config['architecture']!r}", field="architecture")
    multiplier = config["lr_multiplier"]
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or \
            not 0 < multiplier < float("inf"):
        raise InputError(f"{source}: lr_multiplier must be a positive number, got "
                         f"{multiplier!r}", field="lr_multiplier")


def _build(config: dict[str, Any], tensors: dict[str, Any], source: str) -> StyleGAN2Generator:
    """Check the declared sizes, then build (:func:`build_checked`: shapes compared on the meta
    device first) and load the file's tensors (whose bytes the caller checked)."""
    _check_config(config, source)
    return build_checked(lambda: StyleGAN2Generator(**config), tensors, source)


def read_nvidia_pickle(path: str | Path) -> StyleGAN2Generator:
    content = read_restricted_pickle(path)
    try:
        return from_nvidia(content, str(path))
    except InputError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError,
            OverflowError) as err:  # a malformed value the checks did not name
        raise InputError(f"{path} holds a malformed NVIDIA network ({type(err).__name__}: "
                         f"{str(err)[:160]})") from None


# -- rosinality ----------------------------------------------------------------------------------
def rosinality_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any],
                                                     torch.Tensor | None]:
    """The generator's state dict, the ``args`` and the ``latent_avg`` of a rosinality file."""
    if isinstance(state.get("g_ema"), dict):
        args = state.get("args")
        args = vars(args) if hasattr(args, "__dict__") else args if isinstance(args, dict) \
            else {}
        return state["g_ema"], args, state.get("latent_avg")
    return state, {}, state.get("latent_avg")


def from_rosinality(state: dict[str, Any], source: str) -> StyleGAN2Generator:
    """Our generator from a rosinality checkpoint, configuration inferred from shapes."""
    try:
        return _from_rosinality(state, source)
    except InputError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as err:
        raise InputError(f"{source} holds a malformed rosinality generator "
                         f"({type(err).__name__}: {str(err)[:160]})") from None


def _from_rosinality(state: dict[str, Any], source: str) -> StyleGAN2Generator:
    g, args, latent_avg = rosinality_state(state)
    g = {k: v for k, v in g.items() if isinstance(v, torch.Tensor)}
    check_backed(g, source)
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise InputError(f"{source}: latent_avg is a {type(latent_avg).__name__}, not a tensor",
                         field="latent_avg")
    for key, rank in (("input.input", 4), ("conv1.conv.weight", 5)):
        if key in g and g[key].dim() != rank:
            raise InputError(f"{source}: {key} has shape {list(g[key].shape)}, not {rank}-d")
    multiplier = args.get("lr_mlp", 0.01)
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)):
        raise InputError(f"{source}: args.lr_mlp must be a number, got {multiplier!r}",
                         field="lr_mlp")
    mapping = sorted(int(m.group(1)) for k in g if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    if not mapping or "input.input" not in g or "conv1.conv.weight" not in g:
        keys = shorten(sorted(g))
        raise InputError(f"{source} is not a rosinality StyleGAN2 generator (keys: {keys})")
    upsamples = len([k for k in g if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    blocks = upsamples + 1
    channels = [int(g["input.input"].shape[1])] + [
        int(g[f"convs.{2 * j}.conv.weight"].shape[1]) if f"convs.{2 * j}.conv.weight" in g
        else 0 for j in range(upsamples)]
    w_dim = int(g[f"style.{mapping[0]}.weight"].shape[0])
    config = {"resolution": 4 << (blocks - 1), "z_dim": int(g[f"style.{mapping[0]}.weight"]
                                                            .shape[1]),
              "w_dim": w_dim, "channels": channels, "mapping_layers": len(mapping),
              "lr_multiplier": float(multiplier), "conv_clamp": None}
    native: dict[str, torch.Tensor] = {}
    missing: list[str] = []

    def take(key: str, part=lambda t: t) -> torch.Tensor | None:
        value = g.pop(key, None)
        if value is None:
            missing.append(key)
            return None
        return part(value)

    def check_filter(key: str) -> None:
        kernel = g.pop(key, None)
        if kernel is not None and not torch.allclose(kernel.float(), fir_filter() * 4, atol=1e-6):
            raise InputError(f"{source}: {key} is not the standard [1, 3, 3, 1] filter")

    def conv(ours: str, theirs: str, noise: str) -> None:
        native[f"{ours}.weight"] = take(f"{theirs}.conv.weight", lambda t: t[0])
        native[f"{ours}.affine.weight"] = take(f"{theirs}.conv.modulation.weight")
        native[f"{ours}.affine.bias"] = take(f"{theirs}.conv.modulation.bias")
        native[f"{ours}.noise_strength"] = take(f"{theirs}.noise.weight", lambda t: t[0])
        native[f"{ours}.bias"] = take(f"{theirs}.activate.bias")
        native[f"{ours}.noise_const"] = take(noise, lambda t: t[0, 0])
        check_filter(f"{theirs}.conv.blur.kernel")

    def torgb(ours: str, theirs: str) -> None:
        native[f"{ours}.weight"] = take(f"{theirs}.conv.weight", lambda t: t[0])
        native[f"{ours}.affine.weight"] = take(f"{theirs}.conv.modulation.weight")
        native[f"{ours}.affine.bias"] = take(f"{theirs}.conv.modulation.bias")
        native[f"{ours}.bias"] = take(f"{theirs}.bias", lambda t: t.reshape(-1))
        check_filter(f"{theirs}.upsample.kernel")

    for i, index in enumerate(mapping):
        native[f"mapping.fc{i}.weight"] = take(f"style.{index}.weight")
        native[f"mapping.fc{i}.bias"] = take(f"style.{index}.bias")
    native["synthesis.b4.const"] = take("input.input", lambda t: t[0])
    conv("synthesis.b4.conv1", "conv1", "noises.noise_0")
    torgb("synthesis.b4.torgb", "to_rgb1")
    for j in range(upsamples):
        block = f"synthesis.b{8 << j}"
        conv(f"{block}.conv0", f"convs.{2 * j}", f"noises.noise_{2 * j + 1}")
        conv(f"{block}.conv1", f"convs.{2 * j + 1}", f"noises.noise_{2 * j + 2}")
        torgb(f"{block}.torgb", f"to_rgbs.{j}")
    unexpected = sorted(k for k in g if k != "latent_avg")
    if missing or unexpected:
        problems = ([f"missing keys: {shorten(missing)}"] if missing else []) + \
            ([f"unexpected keys: {shorten(unexpected)}"] if unexpected else [])
        raise InputError(f"{source} (rosinality layout) does not match the architecture: "
                         + "; ".join(problems))
    if latent_avg is not None:
        native["mapping.w_avg"] = latent_avg.reshape(-1)[:w_dim].float()
    else:
        native["mapping.w_avg"] = torch.zeros(w_dim)
    generator = _build(config, native, f"{source} (rosinality layout)")
    if latent_avg is None:
        generator.mapping.w_avg.copy_(mean_w(generator))
    return generator.eval()


@torch.no_grad()
def mean_w(generator: StyleGAN2Generator, samples: int = W_AVG_SAMPLES, seed: int = 0
           ) -> torch.Tensor:
    """The mean of the mapping of ``samples`` seeded z (for files that store no ``w_avg``)."""
    rng = torch.Generator().manual_seed(seed)
    total = torch.zeros(generator.w_dim)
    for start in range(0, samples, 1000):
        z = torch.randn(min(1000, samples - start), generator.mapping_z_dim, generator=rng)
        total += generator.mapping(z.to(generator.device)).sum(dim=0).cpu()
    return total / samples


def is_rosinality(state: dict[str, Any]) -> bool:
    g, _, _ = rosinality_state(state)
    return "input.input" in g and "style.1.weight" in g


# -- our native layout from weights alone --------------------------------------------------------
def from_native_state_dict(state_dict: dict[str, Any], source: str) -> StyleGAN2Generator:
    """A generator from our key layout alone: sizes from the shapes; the learning-rate multiplier
    (0.01) and conv clamp (none) cannot be read from weights and take those values."""
    fc0 = state_dict.get("mapping.fc0.weight")
    if fc0 is None or "synthesis.b4.const" not in state_dict:
        raise InputError(f"{source} is not a StyleGAN2 state dict in this project's layout")
    check_backed(state_dict, source)
    blocks = sum(1 for k in state_dict if re.fullmatch(r"synthesis\.b\d+\.conv1\.weight", k))
    mapping = sum(1 for k in state_dict if re.fullmatch(r"mapping\.fc\d+\.weight", k))
    convs = [state_dict.get(f"synthesis.b{4 << k}.conv1.weight") for k in range(blocks)]
    if fc0.dim() != 2 or not blocks or any(c is None or c.dim() != 4 for c in convs):
        raise InputError(f"{source}: mapping.fc0.weight must be 2-d and synthesis.b4 .. "
                         f"b{4 << max(0, blocks - 1)} must each hold a 4-d conv1.weight")
    embed = state_dict.get("mapping.embed.weight")
    if embed is not None and (embed.dim() != 2 or embed.shape[0] >= fc0.shape[1]):
        raise InputError(f"{source}: mapping.embed.weight must be [w_dim, classes] and narrower "
                         "than mapping.fc0's input")
    architecture = ("resnet" if "synthesis.b8.skip.weight" in state_dict else
                    "orig" if blocks > 1 and "synthesis.b4.torgb.weight" not in state_dict
                    else "skip")
    config = {"resolution": 4 << (blocks - 1),
              "z_dim": int(fc0.shape[1]) - (int(embed.shape[0]) if embed is not None else 0),
              "w_dim": int(fc0.shape[0]), "mapping_layers": mapping,
              "channels": [int(c.shape[0]) for c in convs], "lr_multiplier": 0.01,
              "conv_clamp": None, "architecture": architecture,
              "c_dim": int(embed.shape[1]) if embed is not None else 0}
    return _build(config, state_dict, source).eval()
