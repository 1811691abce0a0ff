// `import depthmetric._C` loads this library (and so registers torch.ops.depthmetric.*) and exposes
// what the build compiled. Built by setup.py only, against Python's limited API (one abi3 module for every
// Python >= 3.10); the CMake build is loaded with torch.ops.load_library.
#include <Python.h>

#ifndef DEPTHMETRIC_WITH_CUDA
#define DEPTHMETRIC_WITH_CUDA 0
#endif
#ifndef DEPTHMETRIC_CUDA_ARCHS
#define DEPTHMETRIC_CUDA_ARCHS ""
#endif
#ifndef DEPTHMETRIC_TORCH_VERSION
#define DEPTHMETRIC_TORCH_VERSION ""
#endif
#ifndef DEPTHMETRIC_TORCH_TARGET
#define DEPTHMETRIC_TORCH_TARGET ""
#endif
#ifndef DEPTHMETRIC_PYTHON_VERSION
#define DEPTHMETRIC_PYTHON_VERSION ""
#endif

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "depthmetric's compiled kernels", -1, nullptr};
  PyObject* m = PyModule_Create(&module);
  if (m == nullptr) return nullptr;
  if (PyModule_AddIntConstant(m, "with_cuda", DEPTHMETRIC_WITH_CUDA) < 0 ||
      PyModule_AddStringConstant(m, "cuda_arch_list", DEPTHMETRIC_CUDA_ARCHS) < 0 ||
      PyModule_AddStringConstant(m, "torch_version", DEPTHMETRIC_TORCH_VERSION) < 0 ||
      PyModule_AddStringConstant(m, "torch_target", DEPTHMETRIC_TORCH_TARGET) < 0 ||
      PyModule_AddStringConstant(m, "python_version", DEPTHMETRIC_PYTHON_VERSION) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
