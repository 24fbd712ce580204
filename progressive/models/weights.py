"""Reads a weights file into numpy arrays by name, without running code from the file.

`read(path)` takes a `torch.save` file (the zip format of torch >= 1.6 or the legacy
format, `_use_new_zipfile_serialization=False`) or a `.safetensors` file and returns flat
names (`layer1.0.conv1.weight`) to arrays in torch's own shapes. A checkpoint that wraps
its weights (`{"state_dict": ..., "epoch": 3}`) is unwrapped, DataParallel's `module.`
prefix is dropped, and entries that are not tensors are left out.

The safety rule: a torch file is a pickle, and unpickling calls whatever functions the
file names, so a downloaded `.pth` can run any code. This reader lets the pickle name only
what rebuilding tensors needs (`collections.OrderedDict`, `torch._utils._rebuild_tensor*`,
`_rebuild_parameter`, the storage types); any other name raises `UnsafeWeightsError`
before it is called. It builds each array from the raw bytes with numpy and checks that
it stays inside its storage. Where torch is installed, the file passes this check first,
then `torch.load(weights_only=True)` reads it: torch < 2.6 hands a TorchScript archive to
`torch.jit.load` even then (CVE-2025-32434), so such archives are refused beforehand.

It imports only the standard library, numpy and `progressive.errors` (torch and
safetensors inside functions), so that it also loads by file path in a python without JAX.
"""

import collections
import io
import json
import math
import os
import pickle
import struct
import zipfile

import numpy as np

from progressive import errors

# torch.save's storage types, as numpy dtypes (BFloat16Storage is refused: numpy has none).
_STORAGES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001
_WRAPPERS = ("state_dict", "model", "model_state")  # checkpoint keys that hold the weights
_TRUST = ("Load weights only from files you trust; re-save it as a plain state_dict "
          "(torch.save(model.state_dict(), ...)) or .safetensors.")


class WeightsError(errors.Error):
  """A weights file that cannot be read: not a weights file, cut short, or no tensors."""


class UnsafeWeightsError(errors.Error):
  """A torch file whose pickle names a callable that building tensors never needs."""


_Storage = collections.namedtuple("_Storage", "key offset numel")  # elements of a root storage
_Tensor = collections.namedtuple("_Tensor", "storage offset size stride")  # built after loading
_StorageType = collections.namedtuple("_StorageType", "name")


def _rebuild_tensor(storage, offset, size, stride, *unused):
  """Stands for torch._utils._rebuild_tensor(_v2): the array is built once the bytes are read."""
  return _Tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


_CALLABLES = {
    "collections.OrderedDict": collections.OrderedDict,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
}


def _bfloat16(path):
  return WeightsError(f"{path} holds bfloat16 tensors, which numpy cannot hold: re-save them "
                      "as float32 (tensor.float()) first.")


def _damaged(path, error):
  reason = (str(error).splitlines() or [""])[0]
  return WeightsError(f"{path} is damaged or cut short ({type(error).__name__}: {reason}): "
                      "download it again or re-save it with torch.save(model.state_dict(), ...).")


class _Unpickler(pickle.Unpickler):
  """Unpickles only what rebuilding tensors needs; any other callable raises before it runs.

  `roots` collects each storage's key -> (numpy dtype, element count) for reading its bytes.
  """

  def __init__(self, path, file):
    super().__init__(file, encoding="utf-8")
    self.path = path
    self.roots = {}

  def find_class(self, module, name):
    if module == "torch" and name in _STORAGES:
      return _StorageType(name)
    if module == "torch" and name == "BFloat16Storage":
      raise _bfloat16(self.path)
    build = _CALLABLES.get(f"{module}.{name}")
    if build is None:
      raise UnsafeWeightsError(
          f"{self.path}'s pickle would call {module}.{name}, which building tensors never "
          f"needs: it may run code, so it was not loaded. {_TRUST}")
    return lambda *args: build(*args)  # a fresh callable: a pickle's BUILD cannot alter ours

  def persistent_load(self, pid):
    # zip: ('storage', type, key, location, numel); legacy adds view (key, offset, numel) or None.
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
            and isinstance(pid[1], _StorageType) and isinstance(pid[4], int)):
      raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
    key, numel = pid[2], pid[4]
    self.roots.setdefault(key, (np.dtype(_STORAGES[pid[1].name]), numel))
    if len(pid) == 6 and pid[5] is not None:
      _, offset, view_numel = pid[5]
      return _Storage(key, offset, view_numel)
    return _Storage(key, 0, numel)


def _read_zip(path, with_data):
  """The pickled object of a torch zip file and its storages' arrays by key (none if not
  `with_data`)."""
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    if any(name.endswith("constants.pkl") for name in names):
      raise WeightsError(f"{path} is a TorchScript archive (torch.jit.save), which holds code: "
                         "save the model's weights with torch.save(model.state_dict(), ...).")
    pickles = [name for name in names if name.endswith("data.pkl") and name.count("/") == 1]
    if not pickles:
      raise WeightsError(f"{path} is a zip without */data.pkl, so not a torch.save file: "
                         "re-save it with torch.save(model.state_dict(), ...).")
    folder = pickles[0][: -len("data.pkl")]
    unpickler = _Unpickler(path, io.BytesIO(archive.read(pickles[0])))
    obj = unpickler.load()
    order = "<"
    if f"{folder}byteorder" in names:
      order = ">" if archive.read(f"{folder}byteorder").strip() == b"big" else "<"
    buffers = {}
    for key, (dtype, _) in unpickler.roots.items() if with_data else ():
      data = archive.read(f"{folder}data/{key}")
      buffers[key] = np.frombuffer(data, dtype.newbyteorder(order), len(data) // dtype.itemsize)
  return obj, buffers


def _read_legacy(path, with_data):
  """The same for torch's legacy format: pickles of the magic number, the protocol version,
  system information, the object, and the storage keys, then each storage's element count
  (int64) and its bytes, little-endian, in the order of the keys."""
  with open(path, "rb") as file:
    if _Unpickler(path, file).load() != _LEGACY_MAGIC:
      raise WeightsError(f"{path} is a pickle but not a torch.save file: re-save it with "
                         "torch.save(model.state_dict(), ...) or as .safetensors.")
    if (version := _Unpickler(path, file).load()) != _LEGACY_PROTOCOL:
      raise WeightsError(f"{path} has torch's legacy format version {version!r}, not "
                         f"{_LEGACY_PROTOCOL}: re-save it with a recent torch.")
    _Unpickler(path, file).load()  # system information: the data is little-endian anyway
    unpickler = _Unpickler(path, file)
    obj = unpickler.load()
    keys = _Unpickler(path, file).load()
    buffers = {}
    for key in keys if with_data else ():
      dtype, numel = unpickler.roots[key]
      (count,) = struct.unpack("<q", file.read(8))
      data = file.read(count * dtype.itemsize)
      if count != numel or len(data) != count * dtype.itemsize:
        raise EOFError(f"storage {key} holds {len(data)} bytes, not {numel} elements")
      buffers[key] = np.frombuffer(data, dtype.newbyteorder("<"))
  return obj, buffers


def _array(path, tensor, buffers):
  """`tensor` (a `_Tensor`) as a C-ordered array, once its storage's bytes are in `buffers`."""
  storage, offset, size, stride = tensor
  ints = (isinstance(storage, _Storage) and all(type(n) is int for n in (
      storage.offset, storage.numel, offset, *size, *stride)) and len(size) == len(stride))
  if not ints or storage.key not in buffers:
    raise _damaged(path, ValueError(f"a tensor is built from {str(tensor)[:80]}"))
  buffer = buffers[storage.key][storage.offset:storage.offset + storage.numel]
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if min((storage.offset, offset, *size, *stride), default=0) < 0 or (
      math.prod(size) and last >= len(buffer)):
    raise _damaged(path, ValueError(f"a tensor of size {size} reaches outside its storage"))
  view = np.lib.stride_tricks.as_strided(
      buffer[offset:], size, [s * buffer.itemsize for s in stride], writeable=False)
  return view.astype(buffer.dtype.newbyteorder("="), order="C")


def _read_safetensors(path):
  """A .safetensors file's arrays by name (`safetensors.numpy`); bfloat16 is refused."""
  with open(path, "rb") as file:
    (length,) = struct.unpack("<Q", file.read(8))
    try:
      header = dict(json.loads(file.read(length)))
    except (ValueError, TypeError) as error:
      raise _damaged(path, error) from None
  if any(isinstance(entry, dict) and entry.get("dtype") == "BF16" for entry in header.values()):
    raise _bfloat16(path)
  import safetensors  # only .safetensors files need it
  import safetensors.numpy

  try:
    return safetensors.numpy.load_file(path)
  except (safetensors.SafetensorError, OSError, ValueError) as error:
    raise _damaged(path, error) from None


def _format(path):
  """'zip', 'legacy' or 'safetensors', from the file's first bytes."""
  try:
    with open(path, "rb") as file:
      head = file.read(9)
  except OSError as error:
    raise WeightsError(f"Cannot read weights file {path} ({error.strerror}): check the path.")
  if zipfile.is_zipfile(path):
    return "zip"
  if head.startswith(b"\x80"):
    return "legacy"
  if len(head) == 9 and head[8:] == b"{":
    return "safetensors"
  cut = " a zip cut short," if head.startswith(b"PK") else ""
  raise WeightsError(f"{path} is{cut} not a torch.save file (zip or legacy) nor .safetensors: "
                     "download it again or re-save it with torch.save(model.state_dict(), ...).")


def _state_dict(path, obj, is_tensor, to_array):
  """The tensors of a state dict or of a checkpoint wrapping one, by name without `module.`."""
  if isinstance(obj, dict):
    obj = next((obj[key] for key in _WRAPPERS if isinstance(obj.get(key), dict)), obj)
  arrays = {}
  for name, value in obj.items() if isinstance(obj, dict) else ():
    if isinstance(name, str) and is_tensor(value):
      arrays[name.removeprefix("module.")] = to_array(value)
  if not arrays:
    raise WeightsError(f"{path} holds no tensors by name: save the weights with "
                       "torch.save(model.state_dict(), ...).")
  return arrays


def _from_torch(path, torch, tensor):
  if tensor.dtype == torch.bfloat16:
    raise _bfloat16(path)
  return np.array(tensor.detach().cpu().numpy(), order="C")


def read(path: str | os.PathLike, *, use_torch: bool | None = None) -> dict[str, np.ndarray]:
  """The tensors of a torch or .safetensors weights file, by name, as numpy arrays.

  `use_torch`: read a torch file with `torch.load(weights_only=True)` after this module's
  check (None: where torch is importable) or with this module's reader alone (False).
  Raises `UnsafeWeightsError` for a pickle that names other callables, `WeightsError` for a
  file that cannot be read.
  """
  path = os.fspath(path)
  kind = _format(path)
  if kind == "safetensors":
    return _state_dict(path, _read_safetensors(path), lambda v: isinstance(v, np.ndarray),
                       lambda v: v)
  torch = None
  if use_torch is not False:
    try:
      import torch  # optional: the built-in reader needs only numpy
    except ImportError:
      if use_torch:
        raise
  reader = _read_zip if kind == "zip" else _read_legacy
  try:
    obj, buffers = reader(path, with_data=torch is None)
    if torch is None:
      return _state_dict(path, obj, lambda v: isinstance(v, _Tensor),
                         lambda v: _array(path, v, buffers))
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except errors.Error:
    raise
  except Exception as error:  # noqa: BLE001 (pickle, zip, numpy, torch: many kinds)
    raise _damaged(path, error) from None
  return _state_dict(path, obj, lambda v: isinstance(v, torch.Tensor),
                     lambda v: _from_torch(path, torch, v))
