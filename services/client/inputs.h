// What `deeplab segment` reads and what it writes: the command line's files and folders
// expanded into a list of images, each with the output name it will be written under.
//
// Stateless functions; they only read the file system.
#ifndef DEEPLAB_SERVICES_CLIENT_INPUTS_H_
#define DEEPLAB_SERVICES_CLIENT_INPUTS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace deeplab::client {

struct InputImage {
  std::string path;  // as given, or the folder argument joined with the found file
  // Where its outputs go, relative to the output folder and without a suffix: the file stem,
  // under its sub-path when found inside a folder argument ("sub/cat"); unique in the list.
  std::string output_stem;
};

// A command-line argument that names nothing readable: a per-image failure, not a crash.
struct InputFailure {
  std::string path;
  absl::Status status;
};

struct ExpandedInputs {
  std::vector<InputImage> images;
  std::vector<InputFailure> failures;
};

// jpg, jpeg, png, bmp, tif, tiff, webp, in any case: what a folder is searched for.
bool HasImageExtension(absl::string_view path);

// Files are taken as they are, whatever their extension (the server decides whether they
// are images). Folders are searched recursively for HasImageExtension files, sorted by
// relative path, so runs are repeatable; the search skips `output_folder`, so that running
// twice on "." does not segment the first run's label maps. Arguments are kept in order; a
// path that does not exist, or a folder that cannot be listed, becomes a failure. Output
// stems that would collide get "-2", "-3"... in input order.
ExpandedInputs ExpandInputs(const std::vector<std::string>& arguments,
                            const std::string& output_folder);

}  // namespace deeplab::client

#endif  // DEEPLAB_SERVICES_CLIENT_INPUTS_H_
