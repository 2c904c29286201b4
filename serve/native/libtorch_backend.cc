// libtriton_pytorch.so: a native Triton backend that runs TorchScript models with libtorch.
//
// The tritonserver of the nvidia-pytriton wheel has no libtorch backend; without this one a
// `platform: "pytorch_libtorch"` model runs through the python-based backend, paying an IPC
// round trip to a stub process (and the stub's Python) on every execution. This backend runs
// the module inside tritonserver instead. recdeploy.serve.native_build compiles it against
// the torch wheel's own headers and libraries; the configs it serves are the stock ones:
//
//   * inputs are passed to forward() positionally, in config order;
//   * an output named <anything>__<i> is element i of the returned tuple (the stock libtorch
//     backend's convention), other outputs follow config order;
//   * max_batch_size > 0: the requests of a dynamic batch are concatenated along dim 0, run
//     once and split back; requests that differ in an input named by the parameter
//     batch_group_inputs (e.g. "K") run in separate groups;
//   * parameters intra_op_thread_count (default 1) sets libtorch's intra-op threads;
//   * parameters input_range ("K=1..1682") refuses integer inputs outside their range as the
//     client's mistake (INVALID_ARG) before the model runs;
//   * KIND_GPU instances run on cuda:<device id> when libtorch has CUDA;
//   * a model file ending in .pt2 (default_model_filename: "model.pt2") is a torch.export +
//     AOTInductor package, loaded with libtorch's AOTIModelPackageLoader instead of
//     torch::jit::load (the stock libtorch backend of the 24.10 container has no such path).
// A request that fails gets an error response; its batch-mates are rerun one by one so each
// gets its own answer, and the server stays up.

#include <ATen/Parallel.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "model_state.h"

namespace recdeploy {
namespace {

// ----------------------------------------------------------------- instance

struct InstanceState {
  ModelState* model;
  torch::jit::Module module;                                       // TorchScript, or
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> package;  // an AOTInductor package
  torch::Device device = torch::kCPU;
};

// An AOTInductor package for `device`; a package compiled for another device kind (a CPU
// package on a KIND_GPU instance, say) is refused with both named.
std::unique_ptr<torch::inductor::AOTIModelPackageLoader> load_package(const std::string& path,
                                                                      const torch::Device& device) {
  auto metadata = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model");
  std::string compiled_for = metadata.count("AOTI_DEVICE_KEY") ? metadata["AOTI_DEVICE_KEY"] : "";
  std::string wanted = device.is_cuda() ? "cuda" : "cpu";
  if (compiled_for != wanted)
    throw std::runtime_error("the package was compiled for '" + compiled_for + "', this instance runs on " +
                             device.str() + ": export it on the device kind that serves it");
  return std::make_unique<torch::inductor::AOTIModelPackageLoader>(
      path, "model", /*run_single_threaded=*/false, /*num_runners=*/1,
      device.is_cuda() ? device.index() : static_cast<c10::DeviceIndex>(-1));
}

// Values of an integer input outside its declared range: the client's mistake.
void check_range(const TensorConfig& tensor, const std::vector<char>& bytes,
                 const std::pair<long long, long long>& range) {
  size_t item = c10::elementSize(tensor.type.torch);
  for (size_t at = 0; at + item <= bytes.size(); at += item) {
    long long value = 0;
    if (tensor.type.torch == torch::kInt) {
      int32_t v;
      std::memcpy(&v, bytes.data() + at, sizeof v);
      value = v;
    } else if (tensor.type.torch == torch::kLong) {
      int64_t v;
      std::memcpy(&v, bytes.data() + at, sizeof v);
      value = v;
    } else {
      throw std::runtime_error("input_range names " + tensor.name + ", which is not INT32 or INT64");
    }
    if (value < range.first || value > range.second)
      throw ClientError(tensor.name + " must be between " + std::to_string(range.first) + " and " +
                        std::to_string(range.second) + ", got " + std::to_string(value));
  }
}

// One request's inputs, copied out of Triton's buffers (each may come in several pieces).
struct RequestFeed {
  std::vector<std::vector<char>> bytes;             // per config input
  std::vector<std::vector<int64_t>> shapes;
  int64_t rows = 1;                                  // dim 0 when the model batches
  std::string group_key;
};

RequestFeed read_request(const ModelState& model, TRITONBACKEND_Request* request) {
  RequestFeed feed;
  for (const TensorConfig& tensor : model.inputs) {
    TRITONBACKEND_Input* input = nullptr;
    check(TRITONBACKEND_RequestInput(request, tensor.name.c_str(), &input),
          ("input " + tensor.name).c_str());
    const char* name;
    TRITONSERVER_DataType datatype;
    const int64_t* shape;
    uint32_t dims = 0, buffers = 0;
    uint64_t byte_size = 0;
    check(TRITONBACKEND_InputProperties(input, &name, &datatype, &shape, &dims, &byte_size,
                                        &buffers), "input properties");
    if (datatype != tensor.type.triton)
      throw std::runtime_error("input " + tensor.name + " has the wrong data type");
    std::vector<char> bytes(byte_size);
    size_t offset = 0;
    for (uint32_t b = 0; b < buffers; ++b) {
      const void* data;
      uint64_t size;
      TRITONSERVER_MemoryType memory;
      int64_t memory_id;
      check(TRITONBACKEND_InputBuffer(input, b, &data, &size, &memory, &memory_id), "input buffer");
      if (memory == TRITONSERVER_MEMORY_GPU)
        throw std::runtime_error("input " + tensor.name + " is in GPU memory; send it from the host");
      if (offset + size > bytes.size()) throw std::runtime_error("input buffers overrun byte_size");
      std::memcpy(bytes.data() + offset, data, size);
      offset += size;
    }
    auto range = model.input_ranges.find(tensor.name);
    if (range != model.input_ranges.end()) check_range(tensor, bytes, range->second);
    std::vector<int64_t> dims_vector(shape, shape + dims);
    if (model.max_batch_size > 0) {
      if (dims_vector.empty()) throw std::runtime_error("input " + tensor.name + " has no batch dim");
      feed.rows = dims_vector[0];
    }
    if (model.group_inputs.count(tensor.name)) {
      // requests group by the set of values they carry in this input (K of a top-K graph)
      size_t item = c10::elementSize(tensor.type.torch);
      std::set<std::string> values;
      for (size_t at = 0; at + item <= bytes.size(); at += item)
        values.insert(std::string(bytes.data() + at, item));
      for (const std::string& value : values) feed.group_key += value;
      feed.group_key += '|';
    }
    feed.bytes.push_back(std::move(bytes));
    feed.shapes.push_back(std::move(dims_vector));
  }
  return feed;
}

// Concatenate the feeds along dim 0 (a single feed passes through) into forward()'s inputs.
std::vector<torch::jit::IValue> to_inputs(const InstanceState& state,
                                          const std::vector<const RequestFeed*>& feeds) {
  std::vector<torch::jit::IValue> inputs;
  const ModelState& model = *state.model;
  for (size_t i = 0; i < model.inputs.size(); ++i) {
    std::vector<int64_t> shape = feeds[0]->shapes[i];
    size_t total_bytes = 0;
    for (const RequestFeed* feed : feeds) total_bytes += feed->bytes[i].size();
    if (feeds.size() > 1) {
      int64_t rows = 0;
      for (const RequestFeed* feed : feeds) {
        if (feed->shapes[i].size() != shape.size() ||
            !std::equal(feed->shapes[i].begin() + 1, feed->shapes[i].end(), shape.begin() + 1))
          throw std::runtime_error("requests disagree on the shape of " + model.inputs[i].name);
        rows += feed->shapes[i][0];
      }
      shape[0] = rows;
    }
    auto tensor = torch::empty(shape, torch::TensorOptions().dtype(model.inputs[i].type.torch));
    if (static_cast<size_t>(tensor.nbytes()) != total_bytes)
      throw std::runtime_error("input " + model.inputs[i].name + " holds " +
                               std::to_string(total_bytes) + " bytes for shape " +
                               c10::str(tensor.sizes()));
    char* out = static_cast<char*>(tensor.data_ptr());
    for (const RequestFeed* feed : feeds) {
      std::memcpy(out, feed->bytes[i].data(), feed->bytes[i].size());
      out += feed->bytes[i].size();
    }
    inputs.emplace_back(state.device.is_cpu() ? tensor : tensor.to(state.device));
  }
  return inputs;
}

// forward()'s tensors -> the config's outputs, contiguous on the host.
std::vector<torch::Tensor> collect_outputs(const InstanceState& state,
                                           const std::vector<torch::Tensor>& elements, int64_t rows) {
  std::vector<torch::Tensor> outputs;
  for (const TensorConfig& output : state.model->outputs) {
    if (output.tuple_index >= elements.size())
      throw std::runtime_error("forward() returned " + std::to_string(elements.size()) +
                               " tensors; output " + output.name + " wants element " +
                               std::to_string(output.tuple_index));
    torch::Tensor tensor = elements[output.tuple_index];
    if (tensor.scalar_type() != output.type.torch)
      throw std::runtime_error("output " + output.name + " is " +
                               std::string(c10::toString(tensor.scalar_type())) +
                               ", the config says otherwise");
    if (state.model->max_batch_size > 0 && (tensor.dim() == 0 || tensor.size(0) != rows))
      throw std::runtime_error("output " + output.name + " has shape " + c10::str(tensor.sizes()) +
                               ", expected dim 0 == " + std::to_string(rows));
    outputs.push_back(tensor.to(torch::kCPU).contiguous());
  }
  return outputs;
}

// forward() on the inputs -> the config's outputs, contiguous on the host.
std::vector<torch::Tensor> run(InstanceState& state, std::vector<torch::jit::IValue> inputs,
                               int64_t rows) {
  c10::InferenceMode guard;
  std::vector<torch::Tensor> elements;
  if (state.package) {
    std::vector<at::Tensor> tensors;
    for (const auto& input : inputs) tensors.push_back(input.toTensor());
    elements = state.package->run(tensors);
    return collect_outputs(state, elements, rows);
  }
  torch::jit::IValue result = state.module.forward(std::move(inputs));
  if (result.isTuple()) {
    for (const auto& element : result.toTupleRef().elements()) elements.push_back(element.toTensor());
  } else if (result.isTensorList()) {
    for (const auto& element : result.toTensorVector()) elements.push_back(element);
  } else {
    elements.push_back(result.toTensor());
  }
  return collect_outputs(state, elements, rows);
}

// Send one request its rows [first, first + rows) of the outputs, or `failure`.
void respond(const InstanceState& state, TRITONBACKEND_Request* request,
             const std::vector<torch::Tensor>* outputs, int64_t first, int64_t rows,
             const Failure& failure) {
  TRITONBACKEND_Response* response = nullptr;
  Err e = TRITONBACKEND_ResponseNew(&response, request);
  if (e != nullptr) {
    log(TRITONSERVER_LOG_ERROR, std::string("cannot create a response: ") + TRITONSERVER_ErrorMessage(e));
    TRITONSERVER_ErrorDelete(e);
    return;
  }
  std::string message = failure.message;
  TRITONSERVER_Error_Code code = failure.code;
  if (message.empty() && outputs == nullptr) message = "the model failed without a message";
  if (message.empty()) {
    try {
      const auto& configs = state.model->outputs;
      for (size_t o = 0; o < configs.size(); ++o) {
        torch::Tensor part = state.model->max_batch_size > 0
                                 ? (*outputs)[o].narrow(0, first, rows).contiguous()
                                 : (*outputs)[o];
        std::vector<int64_t> shape(part.sizes().begin(), part.sizes().end());
        TRITONBACKEND_Output* output = nullptr;
        check(TRITONBACKEND_ResponseOutput(response, &output, configs[o].name.c_str(),
                                           configs[o].type.triton, shape.data(),
                                           static_cast<uint32_t>(shape.size())), "response output");
        void* buffer = nullptr;
        TRITONSERVER_MemoryType memory = TRITONSERVER_MEMORY_CPU;
        int64_t memory_id = 0;
        check(TRITONBACKEND_OutputBuffer(output, &buffer, part.nbytes(), &memory, &memory_id),
              "output buffer");
        if (memory == TRITONSERVER_MEMORY_GPU)
          throw std::runtime_error("Triton offered GPU memory for output " + configs[o].name);
        std::memcpy(buffer, part.data_ptr(), part.nbytes());
      }
    } catch (const std::exception& ex) {
      message = ex.what();
      code = TRITONSERVER_ERROR_INTERNAL;
    }
  }
  Err send = TRITONBACKEND_ResponseSend(
      response, TRITONSERVER_RESPONSE_COMPLETE_FINAL,
      message.empty() ? nullptr : error(state.model->name + ": " + message, code));
  if (send != nullptr) {
    log(TRITONSERVER_LOG_ERROR, std::string("cannot send a response: ") + TRITONSERVER_ErrorMessage(send));
    TRITONSERVER_ErrorDelete(send);
  }
}

// Run `indices` as one forward() and answer each; false (nothing sent) when that run fails.
bool run_group(InstanceState& state, const std::vector<uint32_t>& indices,
               const std::vector<RequestFeed>& feeds, TRITONBACKEND_Request** requests,
               std::vector<bool>& ok, Failure* failure) {
  std::vector<const RequestFeed*> group;
  int64_t rows = 0;
  for (uint32_t i : indices) {
    group.push_back(&feeds[i]);
    rows += feeds[i].rows;
  }
  std::vector<torch::Tensor> outputs;
  try {
    outputs = run(state, to_inputs(state, group), rows);
  } catch (const std::exception& ex) {
    *failure = failure_of(ex);
    return false;
  }
  int64_t first = 0;
  for (uint32_t i : indices) {
    respond(state, requests[i], &outputs, first, feeds[i].rows, Failure{});
    ok[i] = true;
    first += feeds[i].rows;
  }
  return true;
}

}  // namespace
}  // namespace recdeploy

using recdeploy::InstanceState;
using recdeploy::ModelState;

extern "C" {

Err TRITONBACKEND_Initialize(TRITONBACKEND_Backend*) {
  uint32_t major = 0, minor = 0;
  Err e = TRITONBACKEND_ApiVersion(&major, &minor);
  if (e != nullptr) return e;
  if (major != TRITONBACKEND_API_MAJOR_NEEDED || minor < TRITONBACKEND_API_MINOR_NEEDED)
    return recdeploy::error("needs Triton backend API 1." +
                                std::to_string(TRITONBACKEND_API_MINOR_NEEDED) + "+, server has " +
                                std::to_string(major) + "." + std::to_string(minor),
                            TRITONSERVER_ERROR_UNSUPPORTED);
  return nullptr;
}

Err TRITONBACKEND_ModelInitialize(TRITONBACKEND_Model* model) {
  try {
    ModelState* state = recdeploy::read_model_state(model);
    return TRITONBACKEND_ModelSetState(model, state);
  } catch (const std::exception& ex) {
    return recdeploy::error(ex.what(), TRITONSERVER_ERROR_INVALID_ARG);
  }
}

Err TRITONBACKEND_ModelFinalize(TRITONBACKEND_Model* model) {
  void* state = nullptr;
  Err e = TRITONBACKEND_ModelState(model, &state);
  if (e != nullptr) return e;
  delete static_cast<ModelState*>(state);
  return nullptr;
}

Err TRITONBACKEND_ModelInstanceInitialize(TRITONBACKEND_ModelInstance* instance) {
  try {
    TRITONBACKEND_Model* model = nullptr;
    recdeploy::check(TRITONBACKEND_ModelInstanceModel(instance, &model), "instance model");
    void* model_state = nullptr;
    recdeploy::check(TRITONBACKEND_ModelState(model, &model_state), "model state");
    auto state = std::make_unique<InstanceState>();
    state->model = static_cast<ModelState*>(model_state);
    TRITONSERVER_InstanceGroupKind kind;
    int32_t device_id = 0;
    recdeploy::check(TRITONBACKEND_ModelInstanceKind(instance, &kind), "instance kind");
    recdeploy::check(TRITONBACKEND_ModelInstanceDeviceId(instance, &device_id), "device id");
    if (kind == TRITONSERVER_INSTANCEGROUPKIND_GPU) {
      if (!torch::cuda::is_available())
        throw std::runtime_error("KIND_GPU instance, but this libtorch has no CUDA device");
      state->device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device_id));
    }
    try {
      if (state->model->aoti) {
        state->package = recdeploy::load_package(state->model->model_path, state->device);
      } else {
        state->module = torch::jit::load(state->model->model_path, state->device);
        state->module.eval();
      }
    } catch (const std::exception& ex) {  // a truncated or corrupted file: say which one
      std::ifstream file(state->model->model_path, std::ios::binary | std::ios::ate);
      std::string size = file ? std::to_string(static_cast<long long>(file.tellg())) + " bytes"
                              : "missing";
      throw std::runtime_error("cannot load " + state->model->model_path + " (" + size +
                               "; corrupted or truncated?): " + ex.what());
    }
    recdeploy::log(TRITONSERVER_LOG_INFO, "libtorch backend: " + state->model->name + " loaded " +
                                              state->model->model_path + " on " + state->device.str());
    return TRITONBACKEND_ModelInstanceSetState(instance, state.release());
  } catch (const std::exception& ex) {
    return recdeploy::error(ex.what(), TRITONSERVER_ERROR_INVALID_ARG);
  }
}

Err TRITONBACKEND_ModelInstanceFinalize(TRITONBACKEND_ModelInstance* instance) {
  void* state = nullptr;
  Err e = TRITONBACKEND_ModelInstanceState(instance, &state);
  if (e != nullptr) return e;
  delete static_cast<InstanceState*>(state);
  return nullptr;
}

Err TRITONBACKEND_ModelInstanceExecute(TRITONBACKEND_ModelInstance* instance,
                                       TRITONBACKEND_Request** requests, const uint32_t count) {
  void* raw = nullptr;
  Err e = TRITONBACKEND_ModelInstanceState(instance, &raw);
  if (e != nullptr) return e;  // Triton keeps the requests and fails them
  InstanceState& state = *static_cast<InstanceState*>(raw);
  uint64_t exec_start = recdeploy::now_ns();
  // libtorch's intra-op count is OpenMP's, which is per calling thread: set it on the thread
  // Triton executes this instance on, not (only) the one that loaded it. Left at the default
  // (all cores), each instance forks a team per op whose spinning threads fight the HTTP
  // front end and the other instance for the cores.
  thread_local int threads_set = 0;
  if (state.device.is_cpu() && threads_set != state.model->intra_op_threads) {
    at::set_num_threads(state.model->intra_op_threads);
    threads_set = state.model->intra_op_threads;
  }

  std::vector<recdeploy::RequestFeed> feeds(count);
  std::vector<bool> ok(count, false);
  std::map<std::string, std::vector<uint32_t>> groups;  // key -> request indices, in order
  std::vector<std::string> order;
  for (uint32_t i = 0; i < count; ++i) {
    try {
      feeds[i] = recdeploy::read_request(*state.model, requests[i]);
    } catch (const std::exception& ex) {
      recdeploy::respond(state, requests[i], nullptr, 0, 0, recdeploy::failure_of(ex));
      continue;
    }
    // an unbatched model runs each request alone
    std::string key = state.model->max_batch_size > 0 ? feeds[i].group_key : std::to_string(i);
    if (!groups.count(key)) order.push_back(key);
    groups[key].push_back(i);
  }

  uint64_t compute_start = recdeploy::now_ns();
  int64_t batch_rows = 0;
  for (const std::string& key : order) {
    const std::vector<uint32_t>& indices = groups[key];
    recdeploy::Failure failure;
    if (recdeploy::run_group(state, indices, feeds, requests, ok, &failure)) {
      for (uint32_t i : indices) batch_rows += feeds[i].rows;
      continue;
    }
    for (uint32_t i : indices) {  // one by one, so one bad request fails only itself
      if (indices.size() > 1 && recdeploy::run_group(state, {i}, feeds, requests, ok, &failure)) {
        batch_rows += feeds[i].rows;
      } else {
        recdeploy::respond(state, requests[i], nullptr, 0, 0, failure);
      }
    }
  }
  uint64_t compute_end = recdeploy::now_ns();

  uint64_t exec_end = recdeploy::now_ns();
  for (uint32_t i = 0; i < count; ++i) {
    Err s = TRITONBACKEND_ModelInstanceReportStatistics(instance, requests[i], ok[i], exec_start,
                                                        compute_start, compute_end, exec_end);
    if (s != nullptr) TRITONSERVER_ErrorDelete(s);
    Err r = TRITONBACKEND_RequestRelease(requests[i], TRITONSERVER_REQUEST_RELEASE_ALL);
    if (r != nullptr) TRITONSERVER_ErrorDelete(r);
  }
  if (batch_rows > 0) {
    Err s = TRITONBACKEND_ModelInstanceReportBatchStatistics(
        instance, static_cast<uint64_t>(batch_rows), exec_start, compute_start, compute_end, exec_end);
    if (s != nullptr) TRITONSERVER_ErrorDelete(s);
  }
  return nullptr;
}

}  // extern "C"
