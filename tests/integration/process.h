// Starts a real program as a child process for integration tests, reads the lines it
// prints, signals it and waits for it. The child is killed if still running when the
// object is destroyed, so a failing test never leaves servers behind.
#ifndef DEEPLAB_TESTS_INTEGRATION_PROCESS_H_
#define DEEPLAB_TESTS_INTEGRATION_PROCESS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace deeplab::testing {

class ChildProcess {
 public:
  // argv[0] is the program path. The child's stdout is captured; stderr is inherited so
  // its logs show in the test output.
  static absl::StatusOr<ChildProcess> Start(const std::vector<std::string>& argv);

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&&) = delete;
  ~ChildProcess();

  // Reads stdout until a line starting with `prefix` arrives; returns the rest of the line.
  // DEADLINE_EXCEEDED after `timeout`, UNAVAILABLE if the child closes stdout first.
  absl::StatusOr<std::string> WaitForLine(const std::string& prefix, absl::Duration timeout);

  void Signal(int signal);
  // The exit code, or 128 + signal for a signalled child; DEADLINE_EXCEEDED on timeout.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  int pid() const { return pid_; }

 private:
  ChildProcess(int pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}

  int pid_ = -1;
  int stdout_fd_ = -1;
  std::string buffer_;
  bool exited_ = false;
};

// A command-line program run to completion.
struct ProgramResult {
  int exit_code = -1;  // or 128 + signal
  std::string out;     // what it wrote to stdout
  std::string err;     // and to stderr
};

// Runs argv (argv[0] is the program path) with stdin from /dev/null and both output
// streams captured. DEADLINE_EXCEEDED, and the program killed, if it runs past `timeout`.
absl::StatusOr<ProgramResult> RunProgram(const std::vector<std::string>& argv,
                                         absl::Duration timeout);

// "host:port" from a "deeplab-worker: grpc 127.0.0.1:PORT" style remainder.
std::string LastWord(const std::string& line);

}  // namespace deeplab::testing

#endif  // DEEPLAB_TESTS_INTEGRATION_PROCESS_H_
