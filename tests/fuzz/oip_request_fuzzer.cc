// Open Inference Protocol requests, as the gateway's REST port and its gRPC
// inference.GRPCInferenceService receive them: ParseHttpInferRequest (JSON, then the binary
// data extension's bytes) or a ModelInferRequest in protobuf form, then PlanInfer against a
// 3-class model.
// Input layout: byte 0 picks the form (even: REST, odd: protobuf); for REST, bytes 1-4 are the
// Inference-Header-Content-Length (little-endian int32; negative: none), the rest the body.
// Properties: a refusal is INVALID_ARGUMENT (RESOURCE_EXHAUSTED for JSON over the limit);
// a plan has one request per image, each naming the model and carrying exactly one image:
// encoded bytes, or raw pixels whose size is height x width x channels.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "services/gateway/inference_http.h"
#include "services/gateway/inference_protocol.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

deeplab::v1::ModelInfo Colour() {
  deeplab::v1::ModelInfo m;
  m.set_name("colour");
  m.set_num_classes(3);
  for (const char* name : {"red", "green", "blue"}) m.add_class_names(name);
  m.set_input_height(64);
  m.set_input_width(64);
  m.set_ready(true);
  return m;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  inference::ModelInferRequest request;
  if (data[0] % 2 == 0) {
    uint8_t header[4] = {};
    std::memcpy(header, data + 1, size - 1 < 4 ? size - 1 : 4);
    const uint32_t u = uint32_t{header[0]} | uint32_t{header[1]} << 8 | uint32_t{header[2]} << 16 |
                       uint32_t{header[3]} << 24;
    int32_t json_length;
    std::memcpy(&json_length, &u, sizeof(json_length));
    const std::string body =
        size > 5 ? std::string(reinterpret_cast<const char*>(data) + 5, size - 5) : std::string();
    // 64 KiB of JSON at most, so that the limit's refusal is reached too.
    absl::StatusOr<deeplab::HttpInferRequest> parsed =
        deeplab::ParseHttpInferRequest(body, json_length, 64 << 10);
    if (!parsed.ok()) {
      DEEPLAB_FUZZ_CHECK(
          absl::IsInvalidArgument(parsed.status()) || absl::IsResourceExhausted(parsed.status()),
          parsed.status().ToString());
      return 0;
    }
    request = std::move(parsed->request);
  } else if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) {
    return 0;  // not a protobuf message: gRPC would refuse it before our code sees it
  }
  request.set_model_name("colour");

  const absl::StatusOr<deeplab::oip::InferPlan> plan = deeplab::oip::PlanInfer(request, Colour());
  if (!plan.ok()) {
    DEEPLAB_FUZZ_CHECK(absl::IsInvalidArgument(plan.status()), plan.status().ToString());
    return 0;
  }
  DEEPLAB_FUZZ_CHECK(!plan->requests.empty(), "a plan without images");
  for (const deeplab::v1::SegmentRequest& r : plan->requests) {
    DEEPLAB_FUZZ_CHECK(r.model() == "colour", r.model());
    const deeplab::v1::Image& image = r.image();
    if (image.has_raw()) {
      const deeplab::v1::RawImage& raw = image.raw();
      const int64_t expected = int64_t{raw.height()} * raw.width() * raw.channels();
      DEEPLAB_FUZZ_CHECK(raw.height() > 0 && raw.width() > 0 && raw.channels() > 0 &&
                             static_cast<int64_t>(raw.data().size()) == expected,
                         absl::StrCat("raw ", raw.height(), "x", raw.width(), "x", raw.channels(),
                                      " with ", raw.data().size(), " bytes"));
    } else {
      DEEPLAB_FUZZ_CHECK(image.source_case() == deeplab::v1::Image::kEncoded,
                         "a planned request without an image");
    }
  }
  return 0;
}
