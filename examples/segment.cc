// The smallest C++ client of deeplab-serve: segments one image file with one weight set and
// writes its label map. Built as build/bin/deeplab-example-segment.
//
//   deeplab-example-segment 127.0.0.1:8000 demo image.png labels.png
//   deeplab-example-segment gw:8000 demo image.png labels.png --ca ca.crt --token-file token
//       [--cert client.crt --key client.key]   (TLS, a bearer token, mutual TLS)
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <sstream>

#include "deeplab/v1/segmentation.grpc.pb.h"

namespace {

std::string ReadFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

}  // namespace

int main(int argc, char** argv) {
  // Optional TLS and token: --ca FILE, --cert FILE --key FILE, --token-file FILE.
  std::map<std::string, std::string> options;
  for (int i = 5; i + 1 < argc; i += 2) options[argv[i]] = ReadFile(argv[i + 1]);
  if (argc < 5 || argc % 2 == 0) {
    std::cerr << "usage: " << argv[0] << " SERVER MODEL IMAGE OUT_LABELS.png"
              << " [--ca FILE] [--cert FILE --key FILE] [--token-file FILE]\n";
    return 2;
  }
  std::ifstream in(argv[3], std::ios::binary);
  if (!in) {
    std::cerr << "cannot read " << argv[3] << "\n";
    return 1;
  }
  std::stringstream bytes;
  bytes << in.rdbuf();

  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options.count("--ca") > 0 || options.count("--cert") > 0) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options["--ca"];  // empty: the system's CAs
    ssl.pem_cert_chain = options["--cert"];
    ssl.pem_private_key = options["--key"];
    credentials = grpc::SslCredentials(ssl);
  }
  auto stub = deeplab::v1::Segmentation::NewStub(grpc::CreateChannel(argv[1], credentials));
  deeplab::v1::SegmentRequest request;
  request.set_model(argv[2]);
  request.mutable_image()->set_encoded(bytes.str());
  request.mutable_outputs()->set_label_png(true);
  request.mutable_outputs()->set_class_stats(true);

  grpc::ClientContext context;
  if (std::string token = options["--token-file"]; !token.empty()) {
    token.erase(token.find_last_not_of(" \r\n") + 1);
    context.AddMetadata("authorization", "Bearer " + token);
  }
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
