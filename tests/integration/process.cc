#include "tests/integration/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace deeplab::testing {

namespace {

// Starts argv[0] with argv. Its stdout, and its stderr too when `capture_stderr`, go to
// pipes whose read ends are returned in `read_fds` (stdout first); its stdin comes from
// /dev/null when `null_stdin`, else it is inherited.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, bool capture_stderr,
                            bool null_stdin, std::vector<int>* read_fds) {
  const int streams = capture_stderr ? 2 : 1;
  int pipes[2][2];
  for (int i = 0; i < streams; ++i) {
    if (pipe2(pipes[i], O_CLOEXEC) != 0) {
      for (int j = 0; j < i; ++j) {
        close(pipes[j][0]);
        close(pipes[j][1]);
      }
      return absl::InternalError("pipe failed");
    }
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (null_stdin) {
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  }
  for (int i = 0; i < streams; ++i) {
    posix_spawn_file_actions_adddup2(&actions, pipes[i][1], i == 0 ? STDOUT_FILENO : STDERR_FILENO);
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  for (int i = 0; i < streams; ++i) {
    close(pipes[i][1]);
    if (rc == 0) {
      read_fds->push_back(pipes[i][0]);
    } else {
      close(pipes[i][0]);
    }
  }
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("cannot start ", argv[0], ": ", std::strerror(rc)));
  }
  return pid;
}

}  // namespace

absl::StatusOr<ChildProcess> ChildProcess::Start(const std::vector<std::string>& argv) {
  std::vector<int> fds;
  absl::StatusOr<pid_t> pid = Spawn(argv, /*capture_stderr=*/false, /*null_stdin=*/false, &fds);
  if (!pid.ok()) return pid.status();
  return ChildProcess(*pid, fds[0]);
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(other.pid_), stdout_fd_(other.stdout_fd_), buffer_(std::move(other.buffer_)),
      exited_(other.exited_) {
  other.pid_ = -1;
  other.stdout_fd_ = -1;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

absl::StatusOr<std::string> ChildProcess::WaitForLine(const std::string& prefix,
                                                      absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    size_t newline;
    while ((newline = buffer_.find('\n')) != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      if (line.rfind(prefix, 0) == 0) return line.substr(prefix.size());
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat("no line starting with '", prefix, "'"));
    }
    pollfd p{stdout_fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
    char chunk[4096];
    const ssize_t n = read(stdout_fd_, chunk, sizeof(chunk));
    if (n <= 0) {
      return absl::UnavailableError(absl::StrCat("the process closed its output before printing '",
                                                 prefix, "'"));
    }
    buffer_.append(chunk, n);
  }
}

void ChildProcess::Signal(int signal) {
  if (pid_ > 0 && !exited_) kill(pid_, signal);
}

absl::StatusOr<int> ChildProcess::Wait(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    int status = 0;
    const pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exited_ = true;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    // Polling a child's exit has no blocking-with-timeout call; 10 ms is plenty fine here.
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::DeadlineExceededError("process did not exit in time");
}

absl::StatusOr<ProgramResult> RunProgram(const std::vector<std::string>& argv,
                                         absl::Duration timeout) {
  std::vector<int> read_fds;
  absl::StatusOr<pid_t> pid = Spawn(argv, /*capture_stderr=*/true, /*null_stdin=*/true, &read_fds);
  if (!pid.ok()) return pid.status();
  // Both pipes are drained together, so a program filling one cannot block on it.
  ProgramResult result;
  pollfd fds[2] = {{read_fds[0], POLLIN, 0}, {read_fds[1], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  const absl::Time deadline = absl::Now() + timeout;
  int open_fds = 2;
  bool timed_out = false;
  while (open_fds > 0) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      timed_out = true;
      break;
    }
    if (poll(fds, 2, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char chunk[4096];
      const ssize_t n = read(fds[i].fd, chunk, sizeof(chunk));
      if (n > 0) {
        sinks[i]->append(chunk, n);
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;  // poll ignores negative descriptors
        --open_fds;
      }
    }
  }
  for (const pollfd& p : fds) {
    if (p.fd >= 0) close(p.fd);
  }
  if (timed_out) kill(*pid, SIGKILL);
  int status = 0;
  waitpid(*pid, &status, 0);
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat(
        argv[0], " ran past ", absl::FormatDuration(timeout), "; stderr: ", result.err));
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string LastWord(const std::string& line) { return line.substr(line.rfind(' ') + 1); }

}  // namespace deeplab::testing
