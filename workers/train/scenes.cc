#include "workers/train/scenes.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace deeplab {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int kShift = 4;  // sub-pixel bits for OpenCV drawing
constexpr double kScale = 1 << kShift;

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// The generator's random source. Distributions are written out here rather than taken from
// <random>, whose distributions may differ between standard libraries: a seed must give the
// same scenes everywhere.
class Random {
 public:
  Random(uint64_t seed, uint64_t index) : engine_(SplitMix64(SplitMix64(seed) ^ index)) {}
  double Uniform(double lo, double hi) {
    return lo + (hi - lo) * static_cast<double>(engine_() >> 11) * 0x1.0p-53;
  }
  int Int(int lo, int hi) {  // inclusive
    return lo + static_cast<int>(engine_() % static_cast<uint64_t>(hi - lo + 1));
  }
  bool Chance(double p) { return Uniform(0, 1) < p; }
  // (Draws are sequenced statement by statement: argument evaluation order is unspecified.)
  cv::Vec3f Colour() {
    cv::Vec3f c;
    for (int k = 0; k < 3; ++k) c[k] = static_cast<float>(Uniform(0, 255));
    return c;
  }
  cv::Point SubpixelPoint(int height, int width) {
    const double x = Uniform(0, width);
    const double y = Uniform(0, height);
    return cv::Point(static_cast<int>(x * kScale), static_cast<int>(y * kScale));
  }
  uint64_t Bits() { return engine_(); }

 private:
  std::mt19937_64 engine_;
};

float Distance(const cv::Vec3f& a, const cv::Vec3f& b) { return static_cast<float>(cv::norm(a - b)); }

// A smooth random field in [0, 1]: a coarse grid of uniform values, upsampled bicubically.
cv::Mat SmoothField(Random& rng, int height, int width, int cells) {
  cv::Mat grid(cells, cells, CV_32F);
  for (int y = 0; y < cells; ++y) {
    for (int x = 0; x < cells; ++x) grid.at<float>(y, x) = static_cast<float>(rng.Uniform(0, 1));
  }
  cv::Mat field;
  cv::resize(grid, field, cv::Size(width, height), 0, 0, cv::INTER_CUBIC);
  cv::min(cv::max(field, 0.0), 1.0, field);
  return field;
}

// Paints a texture between two colours, driven by `field` in [0, 1], into `out` (CV_32FC3).
void PaintTexture(const cv::Mat& field, const cv::Vec3f& a, const cv::Vec3f& b, cv::Mat& out) {
  out.create(field.size(), CV_32FC3);
  for (int y = 0; y < field.rows; ++y) {
    const float* t = field.ptr<float>(y);
    cv::Vec3f* o = out.ptr<cv::Vec3f>(y);
    for (int x = 0; x < field.cols; ++x) o[x] = a + (b - a) * t[x];
  }
}

// Stripes in [0, 1] at a random angle and period.
cv::Mat Stripes(Random& rng, int height, int width, double min_period, double max_period) {
  const double angle = rng.Uniform(0, kPi);
  const double period = rng.Uniform(min_period, max_period);
  const double phase = rng.Uniform(0, 2 * kPi);
  const double c = std::cos(angle), s = std::sin(angle);
  cv::Mat field(height, width, CV_32F);
  for (int y = 0; y < height; ++y) {
    float* f = field.ptr<float>(y);
    for (int x = 0; x < width; ++x) {
      f[x] = static_cast<float>(0.5 + 0.5 * std::sin(2 * kPi * (x * c + y * s) / period + phase));
    }
  }
  return field;
}

// Fills the shape of class `cls` (1..4) centred at (cx, cy) with "radius" r into an 8-bit
// coverage mask (anti-aliased: 255 inside, partial on the edge).
void DrawShape(int cls, double cx, double cy, double r, double angle, cv::Mat& mask) {
  auto point = [&](double radius, double theta) {
    return cv::Point(static_cast<int>(std::lround((cx + radius * std::cos(theta)) * kScale)),
                     static_cast<int>(std::lround((cy + radius * std::sin(theta)) * kScale)));
  };
  std::vector<cv::Point> pts;
  switch (cls) {
    case 1:  // circle
      cv::circle(mask, point(0, 0), static_cast<int>(std::lround(r * kScale)), cv::Scalar(255),
                 cv::FILLED, cv::LINE_AA, kShift);
      return;
    case 2:  // square; circumradius 1.1 r so its area is near the circle's
      for (int k = 0; k < 4; ++k) pts.push_back(point(1.1 * r, angle + k * kPi / 2));
      break;
    case 3:  // equilateral triangle
      for (int k = 0; k < 3; ++k) pts.push_back(point(1.35 * r, angle + k * 2 * kPi / 3));
      break;
    default:  // five-pointed star
      for (int k = 0; k < 10; ++k) pts.push_back(point(k % 2 == 0 ? 1.4 * r : 0.6 * r, angle + k * kPi / 5));
      break;
  }
  cv::fillPoly(mask, std::vector<std::vector<cv::Point>>{pts}, cv::Scalar(255), cv::LINE_AA, kShift);
}

}  // namespace

const std::vector<std::string>& SceneClassNames() {
  static const auto* names =
      new std::vector<std::string>{"background", "circle", "square", "triangle", "star"};
  return *names;
}

absl::Status ValidateSceneOptions(const SceneOptions& o) {
  if (o.height < 16 || o.width < 16 || o.height > 4096 || o.width > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("scene size ", o.height, "x", o.width, " is out of range (16 to 4096 per side)"));
  }
  if (o.min_objects < 0 || o.max_objects < o.min_objects || o.max_objects > 100) {
    return absl::InvalidArgumentError(absl::StrCat("object count range ", o.min_objects, "..",
                                                   o.max_objects, " is invalid (0 to 100)"));
  }
  if (!(o.min_radius > 0) || !(o.max_radius >= o.min_radius) || o.max_radius > 1) {
    return absl::InvalidArgumentError(absl::StrCat("radius range ", o.min_radius, "..",
                                                   o.max_radius, " is invalid (0 to 1)"));
  }
  return absl::OkStatus();
}

Scene GenerateScene(uint64_t seed, uint64_t index, const SceneOptions& o) {
  Random rng(seed, index);
  const int h = o.height, w = o.width;
  const double side = std::min(h, w);

  // Background: two colours mixed by a field that varies slowly across the scene, always a
  // grainy texture on top, sometimes stripes. Objects are smooth, so texture tells object
  // from background locally; colour tells nothing, and only the outline tells the class.
  // (With a flat background and flat objects, "is this pixel inside a shape" needs the
  // whole outline in view, which networks learn very slowly.)
  const cv::Vec3f bg_a = rng.Colour();
  const cv::Vec3f bg_b = rng.Colour();
  cv::Mat image;
  const int cells = rng.Int(2, 4);
  PaintTexture(SmoothField(rng, h, w, cells), bg_a, bg_b, image);
  {
    const int fine_cells = std::max(4, static_cast<int>(side / rng.Uniform(1.5, 3)));
    const double amplitude = rng.Uniform(25, 50);
    cv::Mat fine;
    PaintTexture(SmoothField(rng, h, w, fine_cells), cv::Vec3f(-1, -1, -1) * amplitude,
                 cv::Vec3f(1, 1, 1) * amplitude, fine);
    image += fine;
  }
  if (rng.Chance(0.4)) {
    cv::Mat stripes;
    PaintTexture(Stripes(rng, h, w, side / 24, side / 6), cv::Vec3f(-1, -1, -1) * 25,
                 cv::Vec3f(1, 1, 1) * 25, stripes);
    const double strength = rng.Uniform(0.3, 1.0);
    image += stripes * strength;
  }
  // Clutter that belongs to the background: a few lines of any colour.
  const int lines = rng.Int(0, 3);
  for (int i = 0; i < lines; ++i) {
    const cv::Vec3f c = rng.Colour();
    const cv::Point from = rng.SubpixelPoint(h, w);
    const cv::Point to = rng.SubpixelPoint(h, w);
    const int thickness = rng.Int(1, 3);
    cv::line(image, from, to, cv::Scalar(c[0], c[1], c[2]), thickness, cv::LINE_AA, kShift);
  }

  cv::Mat labels(h, w, CV_8UC1, cv::Scalar(0));
  std::vector<cv::Vec3f> used = {bg_a, bg_b};
  const int objects = rng.Int(o.min_objects, o.max_objects);
  cv::Mat mask(h, w, CV_8UC1);
  for (int i = 0; i < objects; ++i) {
    const int cls = rng.Int(1, 4);
    const double r = side * rng.Uniform(o.min_radius, o.max_radius);
    const double cx = rng.Uniform(0, w);
    const double cy = rng.Uniform(0, h);
    const double angle = rng.Uniform(0, 2 * kPi);
    // A colour that stands out from the background and the objects drawn before, so every
    // labelled edge is visible (best effort: a few tries, then the most distinct one).
    cv::Vec3f colour;
    float best = -1;
    for (int attempt = 0; attempt < 12; ++attempt) {
      const cv::Vec3f candidate = rng.Colour();
      float nearest = std::numeric_limits<float>::max();
      for (const cv::Vec3f& u : used) nearest = std::min(nearest, Distance(candidate, u));
      if (nearest > best) {
        best = nearest;
        colour = candidate;
      }
      if (best > 80) break;
    }
    used.push_back(colour);

    mask.setTo(0);
    DrawShape(cls, cx, cy, r, angle, mask);
    const cv::Rect box = cv::boundingRect(mask);
    if (box.empty()) continue;
    // Shading: a smooth linear gradient across the object.
    const double shade = rng.Uniform(0, 50);
    const double shade_angle = rng.Uniform(0, 2 * kPi);
    for (int y = box.y; y < box.y + box.height; ++y) {
      const uint8_t* m = mask.ptr<uint8_t>(y);
      cv::Vec3f* px = image.ptr<cv::Vec3f>(y);
      uint8_t* lab = labels.ptr<uint8_t>(y);
      for (int x = box.x; x < box.x + box.width; ++x) {
        if (m[x] == 0) continue;
        const double along = ((x - cx) * std::cos(shade_angle) + (y - cy) * std::sin(shade_angle)) / r;
        const double tone = shade * along;
        const cv::Vec3f fill = colour + cv::Vec3f(1, 1, 1) * static_cast<float>(tone);
        const float a = m[x] / 255.0f;
        px[x] = px[x] * (1 - a) + fill * a;
        if (m[x] >= 128) lab[x] = static_cast<uint8_t>(cls);
      }
    }
  }

  // Sensor noise over everything.
  cv::Mat noise(h, w, CV_32FC3);
  cv::RNG cv_rng(rng.Bits());
  const double sigma = rng.Uniform(0.5, 2);
  cv_rng.fill(noise, cv::RNG::NORMAL, 0.0, sigma);
  image += noise;
  Scene scene;
  image.convertTo(scene.image, CV_8UC3);  // rounds and saturates
  scene.labels = labels;
  return scene;
}

absl::Status WriteScenes(const std::string& dir, uint64_t seed, int count,
                         const SceneOptions& options) {
  if (absl::Status s = ValidateSceneOptions(options); !s.ok()) return s;
  if (count < 0) return absl::InvalidArgumentError("the scene count must not be negative");
  std::error_code ec;
  for (const char* sub : {"images", "labels"}) {
    std::filesystem::create_directories(std::filesystem::path(dir) / sub, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot create ", dir, "/", sub, ": ", ec.message()));
    }
  }
  {
    std::ofstream classes(std::filesystem::path(dir) / "classes.txt");
    for (const std::string& name : SceneClassNames()) classes << name << "\n";
    if (!classes) return absl::InternalError(absl::StrCat("cannot write ", dir, "/classes.txt"));
  }
  for (int i = 0; i < count; ++i) {
    const Scene scene = GenerateScene(seed, static_cast<uint64_t>(i), options);
    const std::string name = absl::StrFormat("%06d.png", i);
    cv::Mat bgr;
    cv::cvtColor(scene.image, bgr, cv::COLOR_RGB2BGR);
    const std::string image_path = (std::filesystem::path(dir) / "images" / name).string();
    const std::string label_path = (std::filesystem::path(dir) / "labels" / name).string();
    if (!cv::imwrite(image_path, bgr) || !cv::imwrite(label_path, scene.labels)) {
      return absl::InternalError(absl::StrCat("cannot write ", image_path, " or ", label_path));
    }
  }
  return absl::OkStatus();
}

ConfusionMatrix::ConfusionMatrix(int num_classes)
    : num_classes_(num_classes), counts_(static_cast<size_t>(num_classes) * num_classes, 0) {}

absl::Status ConfusionMatrix::Add(const cv::Mat& truth, const cv::Mat& predicted) {
  if (truth.type() != CV_8UC1 || predicted.type() != CV_8UC1 || truth.size() != predicted.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "label maps differ: truth ", truth.cols, "x", truth.rows, " type ", truth.type(),
        ", predicted ", predicted.cols, "x", predicted.rows, " type ", predicted.type()));
  }
  for (int y = 0; y < truth.rows; ++y) {
    const uint8_t* t = truth.ptr<uint8_t>(y);
    const uint8_t* p = predicted.ptr<uint8_t>(y);
    for (int x = 0; x < truth.cols; ++x) {
      if (t[x] >= num_classes_) continue;
      if (p[x] >= num_classes_) {
        return absl::InvalidArgumentError(
            absl::StrCat("predicted class ", p[x], " at (", x, ", ", y, ") is out of range"));
      }
      ++counts_[t[x] * num_classes_ + p[x]];
    }
  }
  return absl::OkStatus();
}

double ConfusionMatrix::Iou(int c) const {
  int64_t tp = count(c, c), fn = 0, fp = 0;
  for (int k = 0; k < num_classes_; ++k) {
    if (k == c) continue;
    fn += count(c, k);
    fp += count(k, c);
  }
  const int64_t uni = tp + fn + fp;
  return uni == 0 ? std::nan("") : static_cast<double>(tp) / static_cast<double>(uni);
}

double ConfusionMatrix::MeanIou() const {
  double sum = 0;
  int defined = 0;
  for (int c = 0; c < num_classes_; ++c) {
    const double iou = Iou(c);
    if (!std::isnan(iou)) {
      sum += iou;
      ++defined;
    }
  }
  return defined == 0 ? std::nan("") : sum / defined;
}

double ConfusionMatrix::PixelAccuracy() const {
  int64_t right = 0, all = 0;
  for (int t = 0; t < num_classes_; ++t) {
    for (int p = 0; p < num_classes_; ++p) {
      all += count(t, p);
      if (t == p) right += count(t, p);
    }
  }
  return all == 0 ? std::nan("") : static_cast<double>(right) / static_cast<double>(all);
}

}  // namespace deeplab
