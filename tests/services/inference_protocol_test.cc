// The Open Inference Protocol's transport-independent logic (inference_protocol.h) and its
// REST encoding (inference_http.h): requests split into per-image SegmentRequests, answers
// assembled into tensors, JSON and the binary data extension. The servers themselves are
// driven by tests/integration/oip_test.py and the Node.js client test.
#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "services/gateway/inference_http.h"
#include "services/gateway/inference_protocol.h"

namespace deeplab {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

v1::ModelInfo Colour() {
  v1::ModelInfo m;
  m.set_name("colour");
  m.set_num_classes(3);
  m.add_class_names("red");
  m.add_class_names("green");
  m.add_class_names("blue");
  m.set_input_height(64);
  m.set_input_width(64);
  m.set_ready(true);
  return m;
}

v1::ListModelsResponse Models() {
  v1::ListModelsResponse r;
  *r.add_models() = Colour();
  r.set_workers(1);
  r.set_healthy_workers(1);
  return r;
}

std::string Le32(uint32_t v) {
  std::string s(4, '\0');
  for (int i = 0; i < 4; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

inference::ModelInferRequest BytesRequest(std::vector<std::string> images) {
  inference::ModelInferRequest r;
  r.set_model_name("colour");
  auto* in = r.add_inputs();
  in->set_name("image");
  in->set_datatype("BYTES");
  in->add_shape(static_cast<int64_t>(images.size()));
  for (auto& i : images) in->mutable_contents()->add_bytes_contents(i);
  return r;
}

inference::ModelInferRequest PixelRequest(std::vector<int64_t> shape, std::string raw) {
  inference::ModelInferRequest r;
  r.set_model_name("colour");
  auto* in = r.add_inputs();
  in->set_name("pixels");
  in->set_datatype("UINT8");
  for (int64_t d : shape) in->add_shape(d);
  r.add_raw_input_contents(std::move(raw));
  return r;
}

TEST(FindModelTest, KnownNamesVersionsAndUnknownOnes) {
  EXPECT_TRUE(oip::FindModel(Models(), "colour", "").ok());
  EXPECT_TRUE(oip::FindModel(Models(), "colour", "1").ok());
  EXPECT_EQ(oip::FindModel(Models(), "colour", "2").status().code(), absl::StatusCode::kNotFound);
  const auto unknown = oip::FindModel(Models(), "nope", "");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(unknown.status().message(), HasSubstr("available: colour"));
  EXPECT_EQ(oip::FindModel(Models(), "", "").status().code(),
            absl::StatusCode::kInvalidArgument);
  // Before any worker answered, the gateway cannot tell: retry, not "no such model".
  v1::ListModelsResponse none;
  EXPECT_EQ(oip::FindModel(none, "colour", "").status().code(), absl::StatusCode::kUnavailable);
  // A long name is quoted shortened.
  const auto long_name = oip::FindModel(Models(), std::string(5000, 'x'), "");
  EXPECT_LT(long_name.status().message().size(), 300u);
}

TEST(ModelMetadataTest, DescribesTheTensorsAndTheClasses) {
  const inference::ModelMetadataResponse m = oip::ModelMetadata(Colour());
  EXPECT_EQ(m.name(), "colour");
  EXPECT_THAT(m.versions(), ElementsAre("1"));
  ASSERT_EQ(m.inputs_size(), 1);
  EXPECT_EQ(m.inputs(0).datatype(), "BYTES");
  std::vector<std::string> outputs;
  for (const auto& o : m.outputs()) outputs.push_back(o.name());
  EXPECT_THAT(outputs,
              ElementsAre("labels", "probabilities", "class_stats", "label_png", "overlay_png"));
  EXPECT_THAT(m.outputs(1).shape(), ElementsAre(-1, 3, -1, -1));
  EXPECT_EQ(m.parameters().at("class_names").string_param(), "red,green,blue");
  EXPECT_EQ(m.parameters().at("num_classes").int64_param(), 3);
  EXPECT_EQ(m.parameters().at("input_height").int64_param(), 64);
}

TEST(BytesElementsTest, RoundTripAndMalformedData) {
  const std::string a = "first", b = "";
  const std::string raw = oip::EncodeBytesElements({&a, &b});
  EXPECT_EQ(raw, Le32(5) + "first" + Le32(0));
  auto decoded = oip::DecodeBytesElements(raw);
  ASSERT_TRUE(decoded.ok());
  EXPECT_THAT(*decoded, ElementsAre("first", ""));
  EXPECT_FALSE(oip::DecodeBytesElements(Le32(5) + "abc").ok());       // element too short
  EXPECT_FALSE(oip::DecodeBytesElements(std::string("\x01\x00", 2)).ok());  // cut prefix
  EXPECT_FALSE(oip::DecodeBytesElements(Le32(0xffffffffu)).ok());     // absurd length
}

TEST(PlanInferTest, EncodedImagesFromContentsAndFromRawBytes) {
  auto plan = oip::PlanInfer(BytesRequest({"img0", "img1"}), Colour());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->requests.size(), 2u);
  EXPECT_EQ(plan->requests[1].image().encoded(), "img1");
  EXPECT_EQ(plan->requests[0].model(), "colour");
  EXPECT_TRUE(plan->batched);
  // Default outputs: labels and class_stats.
  EXPECT_THAT(plan->outputs, ElementsAre("labels", "class_stats"));
  EXPECT_TRUE(plan->requests[0].outputs().label_raw());
  EXPECT_TRUE(plan->requests[0].outputs().class_stats());
  EXPECT_FALSE(plan->requests[0].outputs().overlay_png());

  inference::ModelInferRequest raw = BytesRequest({});
  raw.mutable_inputs(0)->set_shape(0, 2);
  raw.add_raw_input_contents(Le32(2) + "ab" + Le32(3) + "cde");
  plan = oip::PlanInfer(raw, Colour());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->requests[1].image().encoded(), "cde");

  raw.mutable_inputs(0)->set_shape(0, 3);  // shape says 3, data has 2
  EXPECT_THAT(oip::PlanInfer(raw, Colour()).status().message(), HasSubstr("2 elements"));
}

TEST(PlanInferTest, PixelsBatchedAndNot) {
  std::string pixels(2 * 4 * 5 * 3, '\x7f');
  auto plan = oip::PlanInfer(PixelRequest({2, 4, 5, 3}, pixels), Colour());
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->requests.size(), 2u);
  EXPECT_EQ(plan->requests[1].image().raw().height(), 4);
  EXPECT_EQ(plan->requests[1].image().raw().width(), 5);
  EXPECT_EQ(plan->requests[1].image().raw().channels(), 3);
  EXPECT_EQ(plan->requests[1].image().raw().data().size(), 60u);

  plan = oip::PlanInfer(PixelRequest({4, 5, 3}, pixels.substr(0, 60)), Colour());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->batched);
  EXPECT_EQ(plan->requests.size(), 1u);

  // Typed contents instead of raw bytes.
  inference::ModelInferRequest typed = PixelRequest({1, 1, 3}, "");
  typed.clear_raw_input_contents();
  for (uint32_t v : {1u, 2u, 3u}) typed.mutable_inputs(0)->mutable_contents()->add_uint_contents(v);
  plan = oip::PlanInfer(typed, Colour());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->requests[0].image().raw().data(), std::string("\x01\x02\x03", 3));
  typed.mutable_inputs(0)->mutable_contents()->set_uint_contents(2, 256);
  EXPECT_THAT(oip::PlanInfer(typed, Colour()).status().message(), HasSubstr("256"));
}

TEST(PlanInferTest, BadRequestsSayWhatIsWrong) {
  struct Case {
    const char* what;
    inference::ModelInferRequest request;
    const char* message;
  };
  std::vector<Case> cases;
  {
    inference::ModelInferRequest r = BytesRequest({"a"});
    r.clear_inputs();
    cases.push_back({"no input", r, "exactly one input"});
  }
  {
    inference::ModelInferRequest r = BytesRequest({"a"});
    *r.add_inputs() = r.inputs(0);
    cases.push_back({"two inputs", r, "exactly one input"});
  }
  {
    inference::ModelInferRequest r = BytesRequest({"a"});
    r.mutable_inputs(0)->set_datatype("FP32");
    cases.push_back({"FP32", r, "BYTES (encoded images) or UINT8"});
  }
  {
    inference::ModelInferRequest r = BytesRequest({"a"});
    r.mutable_inputs(0)->add_shape(1);
    cases.push_back({"BYTES [1, 1]", r, "shape [N]"});
  }
  {
    inference::ModelInferRequest r = BytesRequest({"a"});
    r.add_raw_input_contents(Le32(1) + "a");
    cases.push_back({"contents and raw", r, "use one"});
  }
  cases.push_back({"2 channels", PixelRequest({4, 5, 2}, std::string(40, 'x')), "channels"});
  cases.push_back({"rank 2", PixelRequest({4, 5}, std::string(20, 'x')), "[N, H, W, 3]"});
  cases.push_back({"short data", PixelRequest({4, 5, 3}, std::string(59, 'x')), "59 bytes"});
  cases.push_back({"zero dim", PixelRequest({0, 5, 3}, ""), "at least 1"});
  cases.push_back({"negative dim", PixelRequest({-1, 5, 3}, ""), "at least 1"});
  {
    inference::ModelInferRequest r = BytesRequest({"a"});
    r.add_outputs()->set_name("logits");
    cases.push_back({"unknown output", r, "unknown output 'logits'"});
  }
  {
    inference::ModelInferRequest r = BytesRequest({"a"});
    r.add_outputs()->set_name("labels");
    r.add_outputs()->set_name("labels");
    cases.push_back({"output twice", r, "twice"});
  }
  {
    inference::ModelInferRequest r = BytesRequest({"a"});
    (*r.mutable_parameters())["priority"].set_string_param("high");
    cases.push_back({"priority not a number", r, "integer"});
  }
  {
    inference::ModelInferRequest r = BytesRequest({"a"});
    (*r.mutable_parameters())["overlay_alpha"].set_double_param(1.5);
    cases.push_back({"alpha out of range", r, "0..1"});
  }
  {
    inference::ModelInferRequest r = BytesRequest({"a"});
    (*r.mutable_parameters())["timeout"].set_int64_param(0);
    cases.push_back({"zero timeout", r, "must be positive"});
  }
  for (const Case& c : cases) {
    const auto plan = oip::PlanInfer(c.request, Colour());
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_THAT(plan.status().message(), HasSubstr(c.message)) << c.what;
  }
}

TEST(PlanInferTest, ParametersReachTheRequests) {
  inference::ModelInferRequest r = BytesRequest({"a", "b"});
  r.set_id("call-7");
  (*r.mutable_parameters())["priority"].set_int64_param(3);
  (*r.mutable_parameters())["overlay_alpha"].set_double_param(0.25);
  (*r.mutable_parameters())["timeout"].set_int64_param(2500000);
  (*r.mutable_parameters())["something_else"].set_bool_param(true);  // ignored
  r.add_outputs()->set_name("overlay_png");
  const auto plan = oip::PlanInfer(r, Colour());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->requests[1].priority(), 3);
  EXPECT_FLOAT_EQ(plan->requests[1].outputs().overlay_alpha(), 0.25f);
  EXPECT_TRUE(plan->requests[1].outputs().overlay_png());
  EXPECT_FALSE(plan->requests[1].outputs().label_raw());
  EXPECT_EQ(plan->requests[1].request_id(), "call-7#1");
  EXPECT_EQ(plan->timeout, absl::Milliseconds(2500));
}

v1::SegmentResponse Answer(int h, int w, char label, std::vector<std::pair<int, double>> stats) {
  v1::SegmentResponse r;
  r.mutable_result()->set_height(h);
  r.mutable_result()->set_width(w);
  r.mutable_result()->set_label_raw(std::string(static_cast<size_t>(h * w), label));
  r.mutable_result()->set_label_png("png-" + std::string(1, label));
  auto* p = r.mutable_result()->mutable_probabilities();
  p->set_num_classes(3);
  p->set_height(h);
  p->set_width(w);
  p->set_data(std::string(static_cast<size_t>(3 * h * w), '\x10'));
  for (auto [id, f] : stats) {
    auto* s = r.mutable_result()->add_class_stats();
    s->set_class_id(id);
    s->set_fraction(f);
  }
  return r;
}

TEST(BuildInferResponseTest, TensorsFromTheAnswers) {
  inference::ModelInferRequest request = BytesRequest({"a", "b"});
  request.set_id("r1");
  for (const char* n : {"labels", "class_stats", "label_png", "probabilities"}) {
    request.add_outputs()->set_name(n);
  }
  const auto plan = oip::PlanInfer(request, Colour());
  ASSERT_TRUE(plan.ok());
  std::vector<v1::SegmentResponse> answers = {Answer(2, 3, '\x02', {{2, 1.0}}),
                                              Answer(2, 3, '\x00', {{0, 0.5}, {1, 0.5}})};
  inference::ModelInferResponse out;
  ASSERT_TRUE(oip::BuildInferResponse(*plan, request, answers, &out).ok());
  EXPECT_EQ(out.model_name(), "colour");
  EXPECT_EQ(out.model_version(), "1");
  EXPECT_EQ(out.id(), "r1");
  ASSERT_EQ(out.outputs_size(), 4);
  ASSERT_EQ(out.raw_output_contents_size(), 4);
  EXPECT_EQ(out.outputs(0).datatype(), "UINT8");
  EXPECT_THAT(out.outputs(0).shape(), ElementsAre(2, 2, 3));
  EXPECT_EQ(out.raw_output_contents(0), std::string(6, '\x02') + std::string(6, '\x00'));
  EXPECT_THAT(out.outputs(1).shape(), ElementsAre(2, 3));
  std::vector<float> stats(6);
  ASSERT_EQ(out.raw_output_contents(1).size(), 24u);
  std::memcpy(stats.data(), out.raw_output_contents(1).data(), 24);
  EXPECT_THAT(stats, ElementsAre(0, 0, 1, 0.5, 0.5, 0));
  EXPECT_EQ(out.outputs(2).datatype(), "BYTES");
  EXPECT_EQ(out.raw_output_contents(2), Le32(5) + "png-\x02" + Le32(5) + std::string("png-\0", 5));
  EXPECT_THAT(out.outputs(3).shape(), ElementsAre(2, 3, 2, 3));
  EXPECT_EQ(out.raw_output_contents(3).size(), 36u);

  // Images of different sizes have no common labels tensor.
  answers[1] = Answer(3, 3, '\x00', {{0, 1.0}});
  inference::ModelInferResponse mixed;
  const absl::Status s = oip::BuildInferResponse(*plan, request, answers, &mixed);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("label_png"));
}

TEST(BuildInferResponseTest, UnbatchedPixelsLeaveOutN) {
  inference::ModelInferRequest request = PixelRequest({2, 3, 3}, std::string(18, 'x'));
  const auto plan = oip::PlanInfer(request, Colour());
  ASSERT_TRUE(plan.ok());
  inference::ModelInferResponse out;
  ASSERT_TRUE(
      oip::BuildInferResponse(*plan, request, {Answer(2, 3, '\x01', {{1, 1.0}})}, &out).ok());
  EXPECT_THAT(out.outputs(0).shape(), ElementsAre(2, 3));
  EXPECT_THAT(out.outputs(1).shape(), ElementsAre(3));
}

// ---- REST encoding

TEST(HttpInferRequestTest, JsonPixelsAndBase64Images) {
  auto parsed = ParseHttpInferRequest(
      R"({"id": "j1", "parameters": {"priority": 2},
          "inputs": [{"name": "x", "datatype": "UINT8", "shape": [1, 2, 3],
                      "data": [[[1, 2, 3], [4, 5, 255]]]}],
          "outputs": [{"name": "labels", "parameters": {"binary_data": true}},
                      {"name": "class_stats"}]})",
      -1, 1 << 20);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->request.id(), "j1");
  EXPECT_EQ(parsed->request.parameters().at("priority").int64_param(), 2);
  EXPECT_EQ(parsed->request.raw_input_contents(0), std::string("\x01\x02\x03\x04\x05\xff", 6));
  EXPECT_THAT(parsed->binary_outputs, ElementsAre("labels"));
  EXPECT_FALSE(parsed->all_binary);
  ASSERT_TRUE(oip::PlanInfer(parsed->request, Colour()).ok());

  parsed = ParseHttpInferRequest(
      R"({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2],
                      "parameters": {"content_type": "base64"}, "data": ["aGVsbG8=", ""]}],
          "parameters": {"binary_data_output": true}})",
      -1, 1 << 20);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_THAT(parsed->request.inputs(0).contents().bytes_contents(), ElementsAre("hello", ""));
  EXPECT_TRUE(parsed->all_binary);
}

TEST(HttpInferRequestTest, BinaryDataExtension) {
  const std::string json =
      R"({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                      "parameters": {"binary_data_size": 9}}]})";
  const std::string body = json + Le32(5) + "image";
  auto parsed = ParseHttpInferRequest(body, static_cast<int64_t>(json.size()), 1 << 20);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->request.raw_input_contents(0), Le32(5) + "image");
  EXPECT_EQ(parsed->request.inputs(0).parameters().count("binary_data_size"), 0u);
  auto plan = oip::PlanInfer(parsed->request, Colour());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->requests[0].image().encoded(), "image");

  // Binary bytes no input claims, a size larger than what follows, a header past the end.
  EXPECT_THAT(ParseHttpInferRequest(body + "x", static_cast<int64_t>(json.size()), 1 << 20)
                  .status()
                  .message(),
              HasSubstr("1 bytes of binary data"));
  EXPECT_THAT(ParseHttpInferRequest(json + "abc", static_cast<int64_t>(json.size()), 1 << 20)
                  .status()
                  .message(),
              HasSubstr("only 3 bytes"));
  EXPECT_FALSE(ParseHttpInferRequest(json, static_cast<int64_t>(json.size()) + 1, 1 << 20).ok());
}

TEST(HttpInferRequestTest, MalformedRequests) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not json", "not a JSON object"},
      {"[1, 2]", "not a JSON object"},
      {"{}", "no \"inputs\""},
      {R"({"inputs": [{"name": "x", "datatype": "UINT8"}]})", "\"shape\""},
      {R"({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1.5]}]})", "integers"},
      {R"({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1]}]})", "neither"},
      {R"({"inputs": [{"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}]})",
       "0..255"},
      {R"({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [3]}]})",
       "strings"},
      {R"({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1],
           "parameters": {"content_type": "base64"}, "data": ["@@@"]}]})",
       "not base64"},
      {R"({"inputs": [], "outputs": [{"nom": "labels"}]})", "\"name\""},
      {R"({"inputs": [], "parameters": {"x": [1]}})", "boolean, a number or a string"},
  };
  for (const auto& [body, message] : cases) {
    const auto parsed = ParseHttpInferRequest(body, -1, 1 << 20);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << body;
    EXPECT_THAT(parsed.status().message(), HasSubstr(message)) << body;
  }
  // Over the JSON limit: refused before parsing.
  EXPECT_EQ(ParseHttpInferRequest(std::string(100, ' '), -1, 99).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(HttpInferResponseTest, JsonAndBinaryOutputs) {
  inference::ModelInferResponse response;
  response.set_model_name("colour");
  response.set_model_version("1");
  response.set_id("a\"b");
  auto* labels = response.add_outputs();
  labels->set_name("labels");
  labels->set_datatype("UINT8");
  labels->add_shape(1);
  labels->add_shape(2);
  response.add_raw_output_contents(std::string("\x00\x02", 2));
  auto* stats = response.add_outputs();
  stats->set_name("class_stats");
  stats->set_datatype("FP32");
  stats->add_shape(2);
  const float f[2] = {0.25f, 0.75f};
  response.add_raw_output_contents(std::string(reinterpret_cast<const char*>(f), 8));
  auto* png = response.add_outputs();
  png->set_name("label_png");
  png->set_datatype("BYTES");
  png->add_shape(1);
  response.add_raw_output_contents(Le32(5) + "hello");

  HttpInferRequest json_only;
  size_t json_length = 0;
  std::string body = FormatHttpInferResponse(response, json_only, &json_length);
  EXPECT_EQ(json_length, body.size());
  EXPECT_EQ(body,
            R"({"model_name":"colour","model_version":"1","id":"a\"b","outputs":[)"
            R"({"name":"labels","datatype":"UINT8","shape":[1,2],"data":[0,2]},)"
            R"({"name":"class_stats","datatype":"FP32","shape":[2],"data":[0.25,0.75]},)"
            R"({"name":"label_png","datatype":"BYTES","shape":[1],)"
            R"("parameters":{"content_type":"base64"},"data":["aGVsbG8="]}]})");

  HttpInferRequest binary_labels;
  binary_labels.binary_outputs = {"labels"};
  body = FormatHttpInferResponse(response, binary_labels, &json_length);
  EXPECT_EQ(body.size(), json_length + 2);
  EXPECT_EQ(body.substr(json_length), std::string("\x00\x02", 2));
  EXPECT_THAT(body.substr(0, json_length), HasSubstr(R"("parameters":{"binary_data_size":2})"));
}

TEST(HttpStatusTest, CodesMapToTheUsualStatuses) {
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kOk), 200);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kPermissionDenied), 403);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kCancelled), 499);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInternal), 500);
  EXPECT_EQ(JsonQuote("a\n\x01\\"), "\"a\\n\\u0001\\\\\"");
}

}  // namespace
}  // namespace deeplab
