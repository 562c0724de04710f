#include "tests/integration/cluster.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace deeplab::testing {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteFile(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text;
}

namespace {

// A connected TCP socket to "host:port[/path]", or -1.
int Connect(const std::string& address) {
  const std::string host_port = address.substr(0, address.find('/'));
  std::vector<std::string> parts = absl::StrSplit(host_port, ':');
  int port = 0;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &port)) return -1;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, parts[0].c_str(), &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// GET /metrics on a connected socket; "" on a read error or timeout.
std::string Get(int fd) {
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
  std::string body;
  if (write(fd, request.data(), request.size()) > 0) {
    char buf[8192];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) body.append(buf, n);
    if (n < 0) body.clear();
  }
  close(fd);
  return body;
}

}  // namespace

std::string Scrape(const std::string& address) {
  const int fd = Connect(address);
  return fd < 0 ? "" : Get(fd);
}

std::string ScrapeWithIdleConnections(const std::string& address, int idle, absl::Duration limit,
                                      double* seconds) {
  std::vector<int> held;
  for (int i = 0; i < idle; ++i) held.push_back(Connect(address));
  const absl::Time start = absl::Now();
  std::string body;
  if (const int fd = Connect(address); fd >= 0) {
    const timeval timeout = absl::ToTimeval(limit);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    body = Get(fd);
  }
  *seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (int fd : held) {
    if (fd >= 0) close(fd);
  }
  return body;
}

double MetricValue(const std::string& exposition, const std::string& series) {
  std::istringstream in(exposition);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) {
      double v = -1;
      if (absl::SimpleAtod(line.substr(series.size() + 1), &v)) return v;
    }
  }
  return -1;
}

Server StartServer(const std::string& binary, const std::string& name,
                   std::vector<std::string> args, const std::string& ready_line,
                   const std::vector<std::string>& wrapper) {
  std::vector<std::string> argv = wrapper;
  argv.push_back(binary);
  for (const char* word : {"--host", "127.0.0.1", "--port", "0", "--metrics-port", "0"}) {
    argv.push_back(word);
  }
  // The gateway's REST port too, so that tests running side by side do not share 8080.
  if (name == "deeplab-gateway") {
    argv.push_back("--http-port");
    argv.push_back("0");
  }
  argv.insert(argv.end(), args.begin(), args.end());
  auto process = ChildProcess::Start(argv);
  EXPECT_TRUE(process.ok()) << process.status();
  auto grpc_line = process->WaitForLine(name + ": grpc ", absl::Seconds(60));
  EXPECT_TRUE(grpc_line.ok()) << grpc_line.status();
  auto metrics_line = process->WaitForLine(name + ": metrics ", absl::Seconds(10));
  EXPECT_TRUE(metrics_line.ok()) << metrics_line.status();
  if (!ready_line.empty()) {
    auto ready = process->WaitForLine(name + ": " + ready_line, absl::Seconds(300));
    EXPECT_TRUE(ready.ok()) << ready.status();
  }
  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(256 << 20);
  channel_args.SetMaxSendMessageSize(256 << 20);
  Server s{*std::move(process), grpc_line.ok() ? LastWord(*grpc_line) : "",
           metrics_line.ok() ? LastWord(*metrics_line) : "", nullptr};
  s.channel =
      grpc::CreateCustomChannel(s.grpc_address, grpc::InsecureChannelCredentials(), channel_args);
  return s;
}

Server StartWorker(const std::string& models, const std::string& ready_line,
                   std::vector<std::string> extra_args) {
  std::vector<std::string> args = {"--models", models, "--threads", "1", "--pipeline-threads",
                                   "2"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  return StartServer(DEEPLAB_WORKER_BINARY, "deeplab-worker", args, ready_line);
}

Server StartGateway(const std::string& workers, std::vector<std::string> extra_args) {
  std::vector<std::string> args = {"--workers", workers, "--status-interval", "200ms"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  return StartServer(DEEPLAB_GATEWAY_BINARY, "deeplab-gateway", args, "");
}

void WriteTestRepository(const std::string& dir, int max_queue_delay_micros) {
  std::filesystem::create_directories(dir + "/colour");
  const std::string cmd = std::string(DEEPLAB_PYTHON) + " " + DEEPLAB_SOURCE_DIR +
                          "/tests/tools/make_torchscript.py --out-dir " + dir + "/colour > /dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  WriteFile(dir + "/colour/config.pbtxt", absl::StrCat(R"pb(
    name: "colour"
    architecture { num_classes: 3 }
    input { height: 64 width: 64 resize: RESIZE_MODE_LETTERBOX normalization: NORMALIZATION_NONE }
    class_names: ["red", "green", "blue"]
    weights { file: "colour_argmax.pt" format: WEIGHTS_FORMAT_TORCHSCRIPT }
    batching { max_batch_size: 8 max_queue_delay_micros: )pb",
                                                       max_queue_delay_micros, " }\n"));
  // Random-weight MobileNetV2: a real network, slow enough on a CPU (about 0.3 s an image
  // on one thread) to catch batches in flight.
  WriteFile(dir + "/slow/config.pbtxt", R"pb(
    name: "slow"
    architecture { backbone: "mobilenetv2" num_classes: 2 }
    input { height: 128 width: 128 }
    class_names: ["background", "thing"]
    weights { format: WEIGHTS_FORMAT_RANDOM }
    batching { max_batch_size: 4 max_queue_delay_micros: 5000 }
  )pb");
}

}  // namespace deeplab::testing
