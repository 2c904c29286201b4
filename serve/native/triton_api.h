// The part of Triton's C backend API (tritonbackend.h / tritonserver.h, API 1.x) that
// libtorch_backend.cc calls, declared here because the nvidia-pytriton wheel ships the
// server and its shared library but not the headers. The functions are resolved against
// libtritonserver.so when tritonserver dlopens the backend; enum values follow the
// documented order of the C API (stable across 1.x).
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

struct TRITONSERVER_Error;
struct TRITONSERVER_Message;
struct TRITONBACKEND_Backend;
struct TRITONBACKEND_Model;
struct TRITONBACKEND_ModelInstance;
struct TRITONBACKEND_Request;
struct TRITONBACKEND_Input;
struct TRITONBACKEND_Response;
struct TRITONBACKEND_Output;

enum TRITONSERVER_DataType {
  TRITONSERVER_TYPE_INVALID, TRITONSERVER_TYPE_BOOL, TRITONSERVER_TYPE_UINT8,
  TRITONSERVER_TYPE_UINT16, TRITONSERVER_TYPE_UINT32, TRITONSERVER_TYPE_UINT64,
  TRITONSERVER_TYPE_INT8, TRITONSERVER_TYPE_INT16, TRITONSERVER_TYPE_INT32,
  TRITONSERVER_TYPE_INT64, TRITONSERVER_TYPE_FP16, TRITONSERVER_TYPE_FP32,
  TRITONSERVER_TYPE_FP64, TRITONSERVER_TYPE_BYTES, TRITONSERVER_TYPE_BF16
};
enum TRITONSERVER_MemoryType {
  TRITONSERVER_MEMORY_CPU, TRITONSERVER_MEMORY_CPU_PINNED, TRITONSERVER_MEMORY_GPU
};
enum TRITONSERVER_InstanceGroupKind {
  TRITONSERVER_INSTANCEGROUPKIND_AUTO, TRITONSERVER_INSTANCEGROUPKIND_CPU,
  TRITONSERVER_INSTANCEGROUPKIND_GPU, TRITONSERVER_INSTANCEGROUPKIND_MODEL
};
enum TRITONSERVER_LogLevel {
  TRITONSERVER_LOG_INFO, TRITONSERVER_LOG_WARN, TRITONSERVER_LOG_ERROR,
  TRITONSERVER_LOG_VERBOSE
};
enum TRITONSERVER_Error_Code {
  TRITONSERVER_ERROR_UNKNOWN, TRITONSERVER_ERROR_INTERNAL, TRITONSERVER_ERROR_NOT_FOUND,
  TRITONSERVER_ERROR_INVALID_ARG, TRITONSERVER_ERROR_UNAVAILABLE,
  TRITONSERVER_ERROR_UNSUPPORTED, TRITONSERVER_ERROR_ALREADY_EXISTS,
  TRITONSERVER_ERROR_CANCELLED
};
enum TRITONBACKEND_ArtifactType { TRITONBACKEND_ARTIFACT_FILESYSTEM };
constexpr uint32_t TRITONSERVER_REQUEST_RELEASE_ALL = 1;
constexpr uint32_t TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1;
constexpr uint32_t TRITONBACKEND_API_MAJOR_NEEDED = 1;
constexpr uint32_t TRITONBACKEND_API_MINOR_NEEDED = 10;

using Err = TRITONSERVER_Error*;

// server
Err TRITONSERVER_ErrorNew(TRITONSERVER_Error_Code code, const char* msg);
void TRITONSERVER_ErrorDelete(Err error);
const char* TRITONSERVER_ErrorMessage(Err error);
Err TRITONSERVER_MessageSerializeToJson(TRITONSERVER_Message* message, const char** base,
                                        size_t* byte_size);
Err TRITONSERVER_MessageDelete(TRITONSERVER_Message* message);
Err TRITONSERVER_LogMessage(TRITONSERVER_LogLevel level, const char* filename, int line,
                            const char* msg);

// backend, model, instance
Err TRITONBACKEND_ApiVersion(uint32_t* major, uint32_t* minor);
Err TRITONBACKEND_ModelConfig(TRITONBACKEND_Model* model, uint32_t config_version,
                              TRITONSERVER_Message** model_config);
Err TRITONBACKEND_ModelName(TRITONBACKEND_Model* model, const char** name);
Err TRITONBACKEND_ModelVersion(TRITONBACKEND_Model* model, uint64_t* version);
Err TRITONBACKEND_ModelRepository(TRITONBACKEND_Model* model,
                                  TRITONBACKEND_ArtifactType* artifact_type,
                                  const char** location);
Err TRITONBACKEND_ModelSetState(TRITONBACKEND_Model* model, void* state);
Err TRITONBACKEND_ModelState(TRITONBACKEND_Model* model, void** state);
Err TRITONBACKEND_ModelInstanceModel(TRITONBACKEND_ModelInstance* instance,
                                     TRITONBACKEND_Model** model);
Err TRITONBACKEND_ModelInstanceName(TRITONBACKEND_ModelInstance* instance, const char** name);
Err TRITONBACKEND_ModelInstanceKind(TRITONBACKEND_ModelInstance* instance,
                                    TRITONSERVER_InstanceGroupKind* kind);
Err TRITONBACKEND_ModelInstanceDeviceId(TRITONBACKEND_ModelInstance* instance,
                                        int32_t* device_id);
Err TRITONBACKEND_ModelInstanceSetState(TRITONBACKEND_ModelInstance* instance, void* state);
Err TRITONBACKEND_ModelInstanceState(TRITONBACKEND_ModelInstance* instance, void** state);
Err TRITONBACKEND_ModelInstanceReportStatistics(
    TRITONBACKEND_ModelInstance* instance, TRITONBACKEND_Request* request, bool success,
    uint64_t exec_start_ns, uint64_t compute_start_ns, uint64_t compute_end_ns,
    uint64_t exec_end_ns);
Err TRITONBACKEND_ModelInstanceReportBatchStatistics(
    TRITONBACKEND_ModelInstance* instance, uint64_t batch_size, uint64_t exec_start_ns,
    uint64_t compute_start_ns, uint64_t compute_end_ns, uint64_t exec_end_ns);

// requests and responses
Err TRITONBACKEND_RequestInput(TRITONBACKEND_Request* request, const char* name,
                               TRITONBACKEND_Input** input);
Err TRITONBACKEND_InputProperties(TRITONBACKEND_Input* input, const char** name,
                                  TRITONSERVER_DataType* datatype, const int64_t** shape,
                                  uint32_t* dims_count, uint64_t* byte_size,
                                  uint32_t* buffer_count);
Err TRITONBACKEND_InputBuffer(TRITONBACKEND_Input* input, uint32_t index, const void** buffer,
                              uint64_t* buffer_byte_size, TRITONSERVER_MemoryType* memory_type,
                              int64_t* memory_type_id);
Err TRITONBACKEND_RequestRelease(TRITONBACKEND_Request* request, uint32_t release_flags);
Err TRITONBACKEND_ResponseNew(TRITONBACKEND_Response** response, TRITONBACKEND_Request* request);
Err TRITONBACKEND_ResponseDelete(TRITONBACKEND_Response* response);
Err TRITONBACKEND_ResponseOutput(TRITONBACKEND_Response* response, TRITONBACKEND_Output** output,
                                 const char* name, TRITONSERVER_DataType datatype,
                                 const int64_t* shape, uint32_t dims_count);
Err TRITONBACKEND_OutputBuffer(TRITONBACKEND_Output* output, void** buffer,
                               uint64_t buffer_byte_size, TRITONSERVER_MemoryType* memory_type,
                               int64_t* memory_type_id);
Err TRITONBACKEND_ResponseSend(TRITONBACKEND_Response* response, uint32_t send_flags, Err error);

}  // extern "C"
