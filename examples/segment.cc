// The smallest C++ client of deeplab-serve: segments one image file with one weight set and
// writes its label map. Built as build/bin/deeplab-example-segment.
//
//   deeplab-example-segment 127.0.0.1:8000 demo image.png labels.png
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>

#include "deeplab/v1/segmentation.grpc.pb.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: " << argv[0] << " SERVER MODEL IMAGE OUT_LABELS.png\n";
    return 2;
  }
  std::ifstream in(argv[3], std::ios::binary);
  if (!in) {
    std::cerr << "cannot read " << argv[3] << "\n";
    return 1;
  }
  std::stringstream bytes;
  bytes << in.rdbuf();

  auto stub = deeplab::v1::Segmentation::NewStub(
      grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials()));
  deeplab::v1::SegmentRequest request;
  request.set_model(argv[2]);
  request.mutable_image()->set_encoded(bytes.str());
  request.mutable_outputs()->set_label_png(true);
  request.mutable_outputs()->set_class_stats(true);

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  deeplab::v1::SegmentResponse response;
  const grpc::Status status = stub->Segment(&context, request, &response);
  if (!status.ok()) {
    std::cerr << "Segment failed: " << status.error_code() << " " << status.error_message() << "\n";
    return 1;
  }
  std::ofstream(argv[4], std::ios::binary) << response.result().label_png();
  std::cout << response.result().width() << "x" << response.result().height() << " in "
            << response.timing().total_seconds() * 1000 << " ms (batch of "
            << response.timing().batch_size() << ")\n";
  for (const auto& c : response.result().class_stats()) {
    std::cout << "  " << c.name() << ": " << c.fraction() * 100 << "%\n";
  }
  return 0;
}
