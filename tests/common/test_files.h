// Files the codec tests read: the real photos of ../shared/data/photos (DEEPLAB_PHOTOS_DIR).
#ifndef DEEPLAB_TESTS_COMMON_TEST_FILES_H_
#define DEEPLAB_TESTS_COMMON_TEST_FILES_H_

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

namespace deeplab {

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

inline std::string PhotoPath(const std::string& name) {
  return std::string(DEEPLAB_PHOTOS_DIR) + "/" + name;
}

}  // namespace deeplab

#endif  // DEEPLAB_TESTS_COMMON_TEST_FILES_H_
