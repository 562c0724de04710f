// The real `deeplab` command-line client against a real gateway and worker on loopback
// ports: what it lists, what it writes for a folder of images (label values and class areas
// checked against images of known colours), and its exit code for each kind of failure.
#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/image_codec.h"
#include "deeplab/v1/segmentation.grpc.pb.h"
#include "tests/integration/cluster.h"

namespace deeplab {
namespace {

namespace fs = std::filesystem;
using ::deeplab::testing::ProgramResult;
using ::deeplab::testing::ReadFile;
using ::deeplab::testing::Server;
using ::deeplab::testing::WriteFile;
using ::testing::HasSubstr;
using ::testing::Not;

// The colour weight set labels a pixel by its dominant channel: red 0, green 1, blue 2.
const cv::Vec3b kRed(250, 0, 0), kGreen(0, 250, 0), kBlue(0, 0, 250);

// An RGB image of vertical bands of equal width, encoded as `extension` (".png", ".bmp").
// 32x64 and other sizes whose longer side is 64 (the colour set's input) are not resized,
// so band edges in the labels are exact.
std::string Bands(const std::string& extension, int height, int width,
                  const std::vector<cv::Vec3b>& colours) {
  cv::Mat rgb(height, width, CV_8UC3);
  for (int x = 0; x < width; ++x) {
    rgb.col(x).setTo(cv::Scalar(colours[x * colours.size() / width]));
  }
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uchar> bytes;
  EXPECT_TRUE(cv::imencode(extension, bgr, bytes));
  return std::string(bytes.begin(), bytes.end());
}

// A loopback port nothing listens on: bound, then closed.
std::string UnusedAddress() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), len), 0);
  EXPECT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  close(fd);
  return absl::StrCat("127.0.0.1:", ntohs(addr.sin_port));
}

ProgramResult Deeplab(std::vector<std::string> args) {
  args.insert(args.begin(), DEEPLAB_CLI_BINARY);
  auto result = deeplab::testing::RunProgram(args, absl::Seconds(120));
  EXPECT_TRUE(result.ok()) << result.status();
  return result.ok() ? *result : ProgramResult{};
}

cv::Mat ReadLabels(const std::string& path) {
  cv::Mat labels = cv::imread(path, cv::IMREAD_UNCHANGED);
  EXPECT_EQ(labels.type(), CV_8UC1) << path;
  return labels;
}

google::protobuf::Struct ReadJson(const std::string& path) {
  google::protobuf::Struct report;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(ReadFile(path), &report).ok()) << path;
  return report;
}

// Every file below `dir`, relative to it.
std::set<std::string> FilesBelow(const std::string& dir) {
  std::set<std::string> files;
  if (!fs::exists(dir)) return files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) files.insert(fs::relative(entry.path(), dir).generic_string());
  }
  return files;
}

// The report agrees with the label map beside it: every class with pixels is listed with
// its name, its exact pixel count and its fraction; nothing else is.
void ExpectReportMatchesLabels(const std::string& json_path, const std::string& label_path) {
  SCOPED_TRACE(json_path);
  const google::protobuf::Struct report = ReadJson(json_path);
  const cv::Mat labels = ReadLabels(label_path);
  const auto& f = report.fields();
  EXPECT_EQ(f.at("model").string_value(), "colour");
  EXPECT_EQ(f.at("width").number_value(), labels.cols);
  EXPECT_EQ(f.at("height").number_value(), labels.rows);
  EXPECT_EQ(f.at("label_png").string_value(), fs::path(label_path).filename().string());
  EXPECT_GT(f.at("timing").struct_value().fields().at("total_seconds").number_value(), 0);
  EXPECT_GT(f.at("latency_seconds").number_value(), 0);
  const char* kNames[] = {"red", "green", "blue"};
  std::set<int> listed;
  for (const auto& area : f.at("class_areas").list_value().values()) {
    const auto& a = area.struct_value().fields();
    const int id = static_cast<int>(a.at("id").number_value());
    ASSERT_TRUE(id >= 0 && id < 3) << id;
    listed.insert(id);
    const int pixels = cv::countNonZero(labels == id);
    EXPECT_EQ(a.at("name").string_value(), kNames[id]);
    EXPECT_EQ(a.at("pixels").number_value(), pixels);
    EXPECT_NEAR(a.at("fraction").number_value(), double(pixels) / labels.total(), 1e-5);
  }
  for (int id = 0; id < 3; ++id) {
    EXPECT_EQ(listed.count(id) > 0, cv::countNonZero(labels == id) > 0) << "class " << id;
  }
}

class ClientCliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    repo_ = new std::string(fs::temp_directory_path() /
                            ("deeplab_client_repo_" + std::to_string(getpid())));
    deeplab::testing::WriteTestRepository(*repo_);
    worker_ = new Server(deeplab::testing::StartWorker(*repo_));
    gateway_ = new Server(deeplab::testing::StartGateway(worker_->grpc_address));
  }
  static void TearDownTestSuite() {
    delete gateway_;
    delete worker_;
    fs::remove_all(*repo_);
    delete repo_;
  }

  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           absl::StrCat("deeplab_client_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // The scripted way to wait for a cluster, which WaitForAReadyModelAndForOneThatIsNot
    // checks on its own.
    const ProgramResult ready =
        Deeplab({"wait", "--server", gateway_->grpc_address, "--model", "colour"});
    ASSERT_EQ(ready.exit_code, 0) << ready.err;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& relative) const { return dir_ + "/" + relative; }
  static const std::string& gateway() { return gateway_->grpc_address; }

  static std::string* repo_;
  static Server* worker_;
  static Server* gateway_;
  std::string dir_;
};
std::string* ClientCliTest::repo_ = nullptr;
Server* ClientCliTest::worker_ = nullptr;
Server* ClientCliTest::gateway_ = nullptr;

TEST_F(ClientCliTest, HelpAndBadCommandLines) {
  const ProgramResult help = Deeplab({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* text : {"deeplab models", "deeplab wait", "deeplab segment", "Exit codes",
                           "4  unknown weight set"}) {
    EXPECT_THAT(help.out, HasSubstr(text));
  }
  const ProgramResult none = Deeplab({});
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_THAT(none.err, HasSubstr("Usage"));

  WriteFile(Path("a.png"), Bands(".png", 8, 8, {kRed}));
  const std::string image = Path("a.png");
  const std::string out = Path("out");
  const std::vector<std::vector<std::string>> bad = {
      {"frobnicate"},
      {"segment", "--model", "colour"},  // no inputs
      {"segment", image},                // no weight set
      {"segment", "--model", "colour", "--model", "slow", image},
      {"segment", "--model", "colour", "--concurrency", "0", image},
      {"segment", "--model", "colour", "--concurrency", "many", image},
      {"segment", "--model", "colour", "--overlay-alpha", "2", image},
      {"segment", "--model", "colour", "--priority", "-1", image},
      {"segment", "--model", "colour", "--timeout", "0", image},
      {"segment", "--model", "colour", "--timeout", "soon", image},
      {"segment", "--model", "colour", "--no-such-flag", image},
      {"segment", "--model"},  // flag without its value
      {"models", "extra"},
      {"wait", "--timeout", "-1s"},
  };
  for (std::vector<std::string> args : bad) {
    args.insert(args.begin(), {"--server", gateway(), "--out", out});
    const ProgramResult r = Deeplab(args);
    EXPECT_EQ(r.exit_code, 2) << absl::StrJoin(args, " ") << "\n" << r.err;
    EXPECT_THAT(r.err, HasSubstr("deeplab --help")) << absl::StrJoin(args, " ");
  }
  EXPECT_FALSE(fs::exists(out)) << "a bad command line must not write anything";
}

TEST_F(ClientCliTest, ModelsListsTheTestWeightSets) {
  const ProgramResult table = Deeplab({"models", "--server", gateway()});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("NAME"));
  EXPECT_THAT(table.out, HasSubstr("MAX BATCH"));
  EXPECT_THAT(table.out, ::testing::ContainsRegex("colour +yes \\(1 worker\\) +3 +64x64 +- +8"));
  EXPECT_THAT(table.out, ::testing::ContainsRegex("slow +(yes \\(1 worker\\)|no) +2 +128x128 "
                                                  "+mobilenetv2 +4"));
  EXPECT_THAT(table.out, HasSubstr("1 worker, 1 healthy\n"));

  const ProgramResult json = Deeplab({"models", "--server", gateway(), "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  v1::ListModelsResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.out, &parsed).ok()) << json.out;
  ASSERT_EQ(parsed.models_size(), 2);
  EXPECT_EQ(parsed.models(0).name(), "colour");
  EXPECT_TRUE(parsed.models(0).ready());
  EXPECT_THAT(parsed.models(0).class_names(), ::testing::ElementsAre("red", "green", "blue"));
  EXPECT_EQ(parsed.models(1).name(), "slow");
  EXPECT_EQ(parsed.healthy_workers(), 1);
}

TEST_F(ClientCliTest, SegmentsAFolderIntoLabelsOverlaysAndReports) {
  WriteFile(Path("in/a.png"), Bands(".png", 32, 64, {kRed, kGreen}));
  WriteFile(Path("in/sub/b.PNG"), Bands(".png", 64, 16, {kBlue}));
  WriteFile(Path("in/sub/deeper/c.bmp"), Bands(".bmp", 20, 30, {kGreen}));
  WriteFile(Path("in/notes.txt"), "not an image: a folder search skips it");
  // The output folder inside the input folder: a second run must not segment the first
  // run's outputs, and overwrites them.
  const std::string out = Path("in/out");
  for (int run = 0; run < 2; ++run) {
    const ProgramResult r = Deeplab({"segment", "--server", gateway(), "--model", "colour", "--out",
                                     out, "--concurrency", "2", Path("in")});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("3 images: 3 segmented, 0 failed"));
    EXPECT_THAT(r.out, HasSubstr("latency p50"));
    EXPECT_THAT(r.out, HasSubstr("outputs in " + out));
    EXPECT_THAT(r.err, Not(HasSubstr("\r"))) << "no progress bar when stderr is not a terminal";
  }

  // Exactly these files: sub-folders mirrored, nothing for notes.txt, no temporary files.
  EXPECT_EQ(FilesBelow(out),
            (std::set<std::string>{"a.json", "a_label.png", "a_overlay.png", "sub/b.json",
                                   "sub/b_label.png", "sub/b_overlay.png", "sub/deeper/c.json",
                                   "sub/deeper/c_label.png", "sub/deeper/c_overlay.png"}));
  const cv::Mat a = ReadLabels(out + "/a_label.png");
  ASSERT_EQ(a.size(), cv::Size(64, 32));
  EXPECT_EQ(cv::countNonZero(a.colRange(0, 32) != 0), 0) << "left half red";
  EXPECT_EQ(cv::countNonZero(a.colRange(32, 64) != 1), 0) << "right half green";
  const cv::Mat b = ReadLabels(out + "/sub/b_label.png");
  ASSERT_EQ(b.size(), cv::Size(16, 64));
  EXPECT_EQ(cv::countNonZero(b != 2), 0);
  const cv::Mat c = ReadLabels(out + "/sub/deeper/c_label.png");
  ASSERT_EQ(c.size(), cv::Size(30, 20));
  EXPECT_EQ(cv::countNonZero(c != 1), 0);
  const cv::Mat overlay = cv::imread(out + "/a_overlay.png", cv::IMREAD_UNCHANGED);
  EXPECT_EQ(overlay.type(), CV_8UC3);
  EXPECT_EQ(overlay.size(), a.size());

  ExpectReportMatchesLabels(out + "/a.json", out + "/a_label.png");
  ExpectReportMatchesLabels(out + "/sub/b.json", out + "/sub/b_label.png");
  ExpectReportMatchesLabels(out + "/sub/deeper/c.json", out + "/sub/deeper/c_label.png");
  const google::protobuf::Struct report = ReadJson(out + "/a.json");
  EXPECT_EQ(report.fields().at("image").string_value(), Path("in/a.png"));
  const auto& areas = report.fields().at("class_areas").list_value().values();
  ASSERT_EQ(areas.size(), 2);
  EXPECT_EQ(areas[0].struct_value().fields().at("pixels").number_value(), 32 * 32);
  EXPECT_EQ(areas[1].struct_value().fields().at("fraction").number_value(), 0.5);
}

TEST_F(ClientCliTest, AMissingFileFailsAloneAndTheOthersAreWritten) {
  WriteFile(Path("one.png"), Bands(".png", 32, 64, {kRed}));
  WriteFile(Path("two.png"), Bands(".png", 32, 64, {kBlue}));
  const std::string out = Path("out");
  const ProgramResult r = Deeplab({"segment", "--server", gateway(), "--model", "colour", "--out",
                                   out, Path("one.png"), Path("missing.png"), Path("two.png")});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr(Path("missing.png") + ": NOT_FOUND: "));
  EXPECT_THAT(r.out, HasSubstr("3 images: 2 segmented, 1 failed"));
  EXPECT_THAT(r.out, HasSubstr("1 NOT_FOUND"));
  EXPECT_EQ(cv::countNonZero(ReadLabels(out + "/one_label.png") != 0), 0);
  EXPECT_EQ(cv::countNonZero(ReadLabels(out + "/two_label.png") != 2), 0);
  EXPECT_FALSE(fs::exists(out + "/missing.json"));
}

// --nooverlay: the label map and the report only, with the same labels, and the report says
// there is no overlay.
TEST_F(ClientCliTest, NoOverlayWritesLabelsAndReportOnly) {
  WriteFile(Path("in/a.png"), Bands(".png", 32, 64, {kRed, kGreen}));
  const std::string out = Path("out");
  const ProgramResult r = Deeplab({"segment", "--server", gateway(), "--model", "colour",
                                   "--nooverlay", "--out", out, Path("in")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("1 image: 1 segmented, 0 failed"));
  EXPECT_EQ(FilesBelow(out), (std::set<std::string>{"a.json", "a_label.png"}));
  const cv::Mat a = ReadLabels(out + "/a_label.png");
  ASSERT_EQ(a.size(), cv::Size(64, 32));
  EXPECT_EQ(cv::countNonZero(a.colRange(0, 32) != 0), 0);
  EXPECT_EQ(cv::countNonZero(a.colRange(32, 64) != 1), 0);
  ExpectReportMatchesLabels(out + "/a.json", out + "/a_label.png");
  const google::protobuf::Struct report = ReadJson(out + "/a.json");
  EXPECT_EQ(report.fields().at("overlay_png").kind_case(), google::protobuf::Value::kNullValue);
  EXPECT_EQ(report.fields().at("label_png").string_value(), "a_label.png");
}

TEST_F(ClientCliTest, ACorruptImageIsInvalidArgumentAndTheOthersAreWritten) {
  std::string noise(3000, '\0');
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<char>((i * 7919 + 13) % 251);
  WriteFile(Path("in/x.jpg"), noise);
  WriteFile(Path("in/y.png"), Bands(".png", 32, 64, {kGreen}));
  const std::string out = Path("out");
  const ProgramResult r =
      Deeplab({"segment", "--server", gateway(), "--model", "colour", "--out", out, Path("in")});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err, HasSubstr(Path("in/x.jpg") + ": INVALID_ARGUMENT: "));
  EXPECT_THAT(r.out, HasSubstr("1 INVALID_ARGUMENT"));
  EXPECT_EQ(FilesBelow(out), (std::set<std::string>{"y.json", "y_label.png", "y_overlay.png"}));
}

TEST_F(ClientCliTest, RealPhotosAnyExtensionAndCollidingNames) {
  const std::string photos = DEEPLAB_PHOTOS_DIR;
  // Same stem in two folders, and a PNG under a name no folder search would pick.
  WriteFile(Path("d1/p.png"), Bands(".png", 32, 64, {kRed}));
  WriteFile(Path("d2/p.png"), Bands(".png", 32, 64, {kGreen}));
  WriteFile(Path("p.data"), Bands(".png", 32, 64, {kBlue}));
  // Quotes and backslashes in a path must not break its JSON report.
  const std::string odd = Path("odd \"name\" \\.png");
  WriteFile(odd, Bands(".png", 32, 64, {kBlue}));
  const std::string out = Path("out");
  // cat.jpg is 12 megapixels: its overlay is far over gRPC's default 4 MiB message limit.
  const ProgramResult r =
      Deeplab({"segment", "--server", gateway(), "--model", "colour", "--out", out, "--quiet",
               photos + "/image1.jpg", photos + "/rgba.png", photos + "/cat.jpg", Path("d1/p.png"),
               Path("d2/p.png"), Path("p.data"), odd});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "") << "--quiet prints no summary";
  for (const char* photo : {"image1.jpg", "rgba.png", "cat.jpg"}) {
    auto decoded = DecodeImage(ReadFile(photos + "/" + photo), ImageLimits());
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    const std::string stem = fs::path(photo).stem().string();
    EXPECT_EQ(ReadLabels(out + "/" + stem + "_label.png").size(), decoded->size()) << photo;
    ExpectReportMatchesLabels(out + "/" + stem + ".json", out + "/" + stem + "_label.png");
  }
  EXPECT_EQ(cv::countNonZero(ReadLabels(out + "/p_label.png") != 0), 0) << "d1/p.png is red";
  EXPECT_EQ(cv::countNonZero(ReadLabels(out + "/p-2_label.png") != 1), 0) << "d2/p.png is green";
  EXPECT_EQ(ReadJson(out + "/p-2.json").fields().at("image").string_value(), Path("d2/p.png"));
  EXPECT_EQ(cv::countNonZero(ReadLabels(out + "/p-3_label.png") != 2), 0) << "p.data is blue";
  const std::string odd_stem = out + "/" + fs::path(odd).stem().string();
  ExpectReportMatchesLabels(odd_stem + ".json", odd_stem + "_label.png");
  EXPECT_EQ(ReadJson(odd_stem + ".json").fields().at("image").string_value(), odd);
}

// On a terminal (util-linux `script` gives the client one) stderr carries a progress bar
// redrawn in place; with --quiet, or a single image, it does not.
TEST_F(ClientCliTest, ProgressBarOnlyOnATerminal) {
  if (!fs::exists("/usr/bin/script")) GTEST_SKIP() << "needs /usr/bin/script for a terminal";
  WriteFile(Path("in/a.png"), Bands(".png", 8, 8, {kRed}));
  WriteFile(Path("in/b.png"), Bands(".png", 8, 8, {kGreen}));
  auto on_terminal = [&](const std::string& flags, const std::string& inputs) {
    const std::string command =
        absl::StrCat("'", DEEPLAB_CLI_BINARY, "' segment --server ", gateway(),
                     " --model colour --out '", Path("out"), "' ", flags, " ", inputs);
    auto r = deeplab::testing::RunProgram({"/usr/bin/script", "-qec", command, "/dev/null"},
                                          absl::Seconds(120));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->out : "";
  };
  const std::string two = on_terminal("", "'" + Path("in") + "'");
  EXPECT_THAT(two, HasSubstr("] 0/2"));
  EXPECT_THAT(two, HasSubstr("] 2/2"));
  EXPECT_THAT(two, HasSubstr("\r\033[K2 images: 2 segmented")) << "the bar is erased first";
  EXPECT_THAT(on_terminal("--quiet", "'" + Path("in") + "'"), Not(HasSubstr("\033[K")));
  // (A terminal turns every "\n" into "\r\n": the bar is what erases the line.)
  EXPECT_THAT(on_terminal("", "'" + Path("in/a.png") + "'"), Not(HasSubstr("\033[K")));
}

TEST_F(ClientCliTest, AnUnknownWeightSetSendsNothing) {
  WriteFile(Path("a.png"), Bands(".png", 8, 8, {kRed}));
  const ProgramResult r = Deeplab(
      {"segment", "--server", gateway(), "--model", "nope", "--out", Path("out"), Path("a.png")});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_THAT(r.err, HasSubstr("unknown weight set 'nope'"));
  EXPECT_THAT(r.err, HasSubstr("colour, slow"));
  EXPECT_FALSE(fs::exists(Path("out")));
}

TEST_F(ClientCliTest, AnUnreachableServerIsExitThree) {
  const std::string nowhere = UnusedAddress();
  WriteFile(Path("a.png"), Bands(".png", 8, 8, {kRed}));
  const ProgramResult models = Deeplab({"models", "--server", nowhere});
  EXPECT_EQ(models.exit_code, 3);
  EXPECT_THAT(models.err, HasSubstr("cannot reach the gateway at " + nowhere));
  const ProgramResult segment = Deeplab(
      {"segment", "--server", nowhere, "--model", "colour", "--out", Path("out"), Path("a.png")});
  EXPECT_EQ(segment.exit_code, 3);
  EXPECT_THAT(segment.err, HasSubstr("cannot reach the gateway at " + nowhere));
  EXPECT_FALSE(fs::exists(Path("out")));
}

// A gateway no worker has answered yet knows no weight set: that is "retry" (3), not
// "unknown weight set" (4).
TEST_F(ClientCliTest, AGatewayWithoutWorkersIsExitThreeNotFour) {
  Server lonely = deeplab::testing::StartGateway(UnusedAddress());
  WriteFile(Path("a.png"), Bands(".png", 8, 8, {kRed}));
  const ProgramResult r = Deeplab({"segment", "--server", lonely.grpc_address, "--model",
                                   "colour", "--out", Path("out"), Path("a.png")});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("knows no weight set yet (no worker has answered it)"));
  EXPECT_FALSE(fs::exists(Path("out")));
}

TEST_F(ClientCliTest, WaitForAReadyModelAndForOneThatIsNot) {
  const ProgramResult ready = Deeplab({"wait", "--server", gateway(), "--model", "colour"});
  EXPECT_EQ(ready.exit_code, 0) << ready.err;
  const ProgramResult any = Deeplab({"wait", "--server", gateway()});
  EXPECT_EQ(any.exit_code, 0) << any.err;

  const absl::Time start = absl::Now();
  const ProgramResult missing = Deeplab(
      {"wait", "--server", gateway(), "--model", "colour", "--model", "nope", "--timeout", "1s"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  EXPECT_THAT(missing.err, HasSubstr("weight set 'nope' is unknown to the gateway"));
  EXPECT_THAT(missing.err, Not(HasSubstr("'colour'")));

  const ProgramResult nobody = Deeplab({"wait", "--server", UnusedAddress(), "--timeout", "500ms"});
  EXPECT_EQ(nobody.exit_code, 1);
  EXPECT_THAT(nobody.err, HasSubstr("cannot reach the gateway"));
}

// A weight set that no live worker has: the gateway answers UNAVAILABLE for every image,
// which is the server's problem, not the images' (exit 3, not 1).
TEST_F(ClientCliTest, UnavailableForEveryImageIsExitThree) {
  Server worker = deeplab::testing::StartWorker(*repo_);
  Server gw = deeplab::testing::StartGateway(worker.grpc_address);
  ASSERT_EQ(Deeplab({"wait", "--server", gw.grpc_address, "--model", "colour"}).exit_code, 0);
  worker.process.Signal(SIGKILL);
  ASSERT_TRUE(worker.process.Wait(absl::Seconds(10)).ok());
  // The gateway learns of the death at its next status poll (every 200 ms here); there is
  // no event to wait on, so poll `deeplab models` until it says so.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (Deeplab({"models", "--server", gw.grpc_address}).out.find("0 healthy") ==
         std::string::npos) {
    ASSERT_LT(absl::Now(), deadline) << "the gateway never noticed the worker died";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  WriteFile(Path("a.png"), Bands(".png", 8, 8, {kRed}));
  WriteFile(Path("b.png"), Bands(".png", 8, 8, {kGreen}));
  const ProgramResult r = Deeplab({"segment", "--server", gw.grpc_address, "--model", "colour",
                                   "--out", Path("out"), Path("a.png"), Path("b.png")});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_THAT(r.err, HasSubstr("is not ready: no healthy worker hosts it"));
  EXPECT_THAT(r.err, HasSubstr(Path("a.png") + ": UNAVAILABLE: "));
  EXPECT_THAT(r.err, HasSubstr("answered UNAVAILABLE for every image"));
}

}  // namespace
}  // namespace deeplab
