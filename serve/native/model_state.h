// Model-level state of the libtorch backend: the model config Triton hands over (as JSON),
// read once per model and shared by its instances; plus the small Triton helpers both files use.
#pragma once

#include <torch/csrc/jit/runtime/jit_exception.h>
#include <torch/script.h>

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "json_reader.h"
#include "triton_api.h"

namespace recdeploy {

inline uint64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline Err error(const std::string& message, TRITONSERVER_Error_Code code = TRITONSERVER_ERROR_INTERNAL) {
  return TRITONSERVER_ErrorNew(code, ("libtorch backend: " + message).c_str());
}

// A failed request's answer. A TorchScript `raise ValueError(msg)` is how a scripted module
// marks the client's mistake: INVALID_ARG (HTTP 400, gRPC INVALID_ARGUMENT) with the module's
// own message, so monitoring and retrying proxies do not count it as a server fault. Anything
// else (RuntimeError included) is the server's: INTERNAL.
struct Failure {
  std::string message;
  TRITONSERVER_Error_Code code = TRITONSERVER_ERROR_INTERNAL;
};

// A request the model must not run (a value outside its input_range): the client's mistake.
struct ClientError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline Failure failure_of(const std::exception& ex) {
  if (const auto* client = dynamic_cast<const ClientError*>(&ex))
    return {client->what(), TRITONSERVER_ERROR_INVALID_ARG};
  const auto* scripted = dynamic_cast<const torch::jit::JITException*>(&ex);
  if (scripted != nullptr && scripted->getPythonClassName() == std::string("builtins.ValueError"))
    return {scripted->getOriginalMsg().value_or(ex.what()), TRITONSERVER_ERROR_INVALID_ARG};
  return {ex.what()};
}

inline void log(TRITONSERVER_LogLevel level, const std::string& message) {
  Err e = TRITONSERVER_LogMessage(level, __FILE__, __LINE__, message.c_str());
  if (e != nullptr) TRITONSERVER_ErrorDelete(e);
}

// Throw the message of a failed Triton call (the error is freed).
inline void check(Err e, const char* what) {
  if (e == nullptr) return;
  std::string message = std::string(what) + ": " + TRITONSERVER_ErrorMessage(e);
  TRITONSERVER_ErrorDelete(e);
  throw std::runtime_error(message);
}

struct TypeInfo {
  TRITONSERVER_DataType triton;
  c10::ScalarType torch;
};

inline const std::map<std::string, TypeInfo>& config_types() {
  static const std::map<std::string, TypeInfo> types = {
      {"TYPE_BOOL", {TRITONSERVER_TYPE_BOOL, torch::kBool}},
      {"TYPE_UINT8", {TRITONSERVER_TYPE_UINT8, torch::kByte}},
      {"TYPE_INT8", {TRITONSERVER_TYPE_INT8, torch::kChar}},
      {"TYPE_INT16", {TRITONSERVER_TYPE_INT16, torch::kShort}},
      {"TYPE_INT32", {TRITONSERVER_TYPE_INT32, torch::kInt}},
      {"TYPE_INT64", {TRITONSERVER_TYPE_INT64, torch::kLong}},
      {"TYPE_FP16", {TRITONSERVER_TYPE_FP16, torch::kHalf}},
      {"TYPE_FP32", {TRITONSERVER_TYPE_FP32, torch::kFloat}},
      {"TYPE_FP64", {TRITONSERVER_TYPE_FP64, torch::kDouble}},
      {"TYPE_BF16", {TRITONSERVER_TYPE_BF16, torch::kBFloat16}},
  };
  return types;
}

struct TensorConfig {
  std::string name;
  TypeInfo type;
  size_t tuple_index = 0;  // outputs: element of forward()'s result
};

// ----------------------------------------------------------------- model (shared by instances)

struct ModelState {
  std::string name;
  std::string model_path;  // <repository>/<model>/<version>/<default_model_filename|model.pt>
  bool aoti = false;       // a torch.export + AOTInductor package (model_path ends in .pt2)
  long long max_batch_size = 0;
  int intra_op_threads = 1;
  std::vector<TensorConfig> inputs, outputs;
  std::set<std::string> group_inputs;
  std::map<std::string, std::pair<long long, long long>> input_ranges;  // name -> [low, high]
};

inline std::string trimmed(std::string item) {
  item.erase(0, item.find_first_not_of(' '));
  item.erase(item.find_last_not_of(' ') + 1);
  return item;
}

// parameters { key: "input_range" value { string_value: "K=1..1682" } }: integer inputs whose
// values outside [low, high] are refused before the model runs (an AOTInductor package or an
// ONNX-shaped graph cannot raise the ValueError that marks a client's mistake)
inline std::map<std::string, std::pair<long long, long long>> parse_ranges(const std::string& text) {
  std::map<std::string, std::pair<long long, long long>> ranges;
  std::stringstream parts(text);
  for (std::string part; std::getline(parts, part, ',');) {
    part = trimmed(part);
    if (part.empty()) continue;
    size_t equals = part.find('='), dots = part.find("..");
    if (equals == std::string::npos || dots == std::string::npos || dots < equals)
      throw std::runtime_error("input_range entry '" + part + "' is not NAME=LOW..HIGH");
    ranges[trimmed(part.substr(0, equals))] = {std::stoll(part.substr(equals + 1, dots - equals - 1)),
                                               std::stoll(part.substr(dots + 2))};
  }
  return ranges;
}

inline std::string parameter(const Json& config, const std::string& key) {
  return config["parameters"][key]["string_value"].str();
}

inline std::vector<TensorConfig> tensor_configs(const Json& list, bool outputs) {
  std::vector<TensorConfig> tensors;
  for (size_t i = 0; i < list.items.size(); ++i) {
    const Json& item = list.items[i];
    TensorConfig tensor;
    tensor.name = item["name"].str();
    std::string type = item["data_type"].str();
    auto found = config_types().find(type);
    if (found == config_types().end())
      throw std::runtime_error("tensor " + tensor.name + " has unsupported data_type " + type);
    tensor.type = found->second;
    tensor.tuple_index = i;
    size_t mark = tensor.name.rfind("__");
    if (outputs && mark != std::string::npos && mark + 2 < tensor.name.size() &&
        tensor.name.find_first_not_of("0123456789", mark + 2) == std::string::npos)
      tensor.tuple_index = std::stoul(tensor.name.substr(mark + 2));
    tensors.push_back(tensor);
  }
  return tensors;
}

inline ModelState* read_model_state(TRITONBACKEND_Model* model) {
  auto state = std::make_unique<ModelState>();
  const char* name = nullptr;
  check(TRITONBACKEND_ModelName(model, &name), "model name");
  state->name = name;
  uint64_t version = 0;
  check(TRITONBACKEND_ModelVersion(model, &version), "model version");
  TRITONBACKEND_ArtifactType artifact;
  const char* location = nullptr;
  check(TRITONBACKEND_ModelRepository(model, &artifact, &location), "model repository");

  TRITONSERVER_Message* message = nullptr;
  check(TRITONBACKEND_ModelConfig(model, 1, &message), "model config");
  const char* base = nullptr;
  size_t size = 0;
  Err e = TRITONSERVER_MessageSerializeToJson(message, &base, &size);
  std::string text = e == nullptr ? std::string(base, size) : std::string();
  TRITONSERVER_MessageDelete(message);
  check(e, "model config to JSON");
  Json config = JsonReader(text).parse();

  std::string filename = config["default_model_filename"].str();
  state->model_path = std::string(location) + "/" + std::to_string(version) + "/" +
                      (filename.empty() ? "model.pt" : filename);
  const std::string suffix = ".pt2";
  state->aoti = state->model_path.size() > suffix.size() &&
                state->model_path.compare(state->model_path.size() - suffix.size(), suffix.size(), suffix) == 0;
  state->input_ranges = parse_ranges(parameter(config, "input_range"));
  state->max_batch_size = config["max_batch_size"].integer(0);
  std::string threads = parameter(config, "intra_op_thread_count");
  state->intra_op_threads = threads.empty() ? 1 : std::max(1, std::stoi(threads));
  state->inputs = tensor_configs(config["input"], false);
  state->outputs = tensor_configs(config["output"], true);
  std::stringstream groups(parameter(config, "batch_group_inputs"));
  for (std::string item; std::getline(groups, item, ',');) {
    item = trimmed(item);
    if (!item.empty()) state->group_inputs.insert(item);
  }
  return state.release();
}

}  // namespace recdeploy
