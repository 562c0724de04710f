#include "services/bench/load_generator.h"

#include <deque>
#include <functional>
#include <map>
#include <random>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/model_info.h"

namespace deeplab::bench {
namespace {

using Phase = MeasurementWindow::Phase;

// How one request ended: the answer is set when the code is OK and is only valid during the
// call.
using Answer = std::function<void(absl::StatusCode code, const v1::SegmentResponse* response)>;

// One SegmentStream call. Requests get consecutive request ids, which the answers (in
// completion order) are matched by. One write is in flight at a time, as gRPC requires; the
// others wait in `writes_`. When the stream ends, every request still unanswered is answered
// with the stream's status (or the code given to Abort).
class StreamCall final
    : public grpc::ClientBidiReactor<v1::SegmentRequest, v1::SegmentStreamResponse> {
 public:
  explicit StreamCall(v1::Segmentation::Stub* stub) {
    stub->async()->SegmentStream(&context_, this);
    StartRead(&incoming_);
    StartCall();
  }

  // Queues `request`; false (and `answer` untouched) when the stream has already ended or
  // broken, so the caller opens another.
  bool Send(const v1::SegmentRequest& request, Answer& answer) {
    const v1::SegmentRequest* start = nullptr;
    {
      absl::MutexLock lock(&mu_);
      if (ended_ || broken_ || closing_) return false;
      const std::string id = absl::StrCat(next_id_++);
      pending_[id] = std::move(answer);
      writes_.push_back(request);
      writes_.back().set_request_id(id);
      if (!writing_) {
        writing_ = true;
        start = &writes_.front();  // deque elements stay put while others are appended
      }
    }
    if (start != nullptr) StartWrite(start);
    return true;
  }

  // Half-closes once the queued writes are out; the gateway then answers what it has and
  // ends the stream.
  void Close() {
    bool now = false;
    {
      absl::MutexLock lock(&mu_);
      closing_ = true;
      now = !writing_ && !broken_ && !half_closed_;
      half_closed_ = half_closed_ || now;
    }
    if (now) StartWritesDone();
  }

  // Gives up on the stream: unanswered requests are answered `code`.
  void Abort(absl::StatusCode code) {
    {
      absl::MutexLock lock(&mu_);
      abort_code_ = code;
    }
    context_.TryCancel();
  }

  bool WaitDone(absl::Duration timeout) { return done_.WaitForNotificationWithTimeout(timeout); }
  bool IsDone() const { return done_.HasBeenNotified(); }

  void OnWriteDone(bool ok) override {
    const v1::SegmentRequest* next = nullptr;
    bool half_close = false;
    {
      absl::MutexLock lock(&mu_);
      writes_.pop_front();
      if (!ok) {
        // The stream is broken; OnDone answers everything pending.
        broken_ = true;
        writing_ = false;
        writes_.clear();
      } else if (!writes_.empty()) {
        next = &writes_.front();
      } else {
        writing_ = false;
        half_close = closing_ && !half_closed_;
        half_closed_ = half_closed_ || half_close;
      }
    }
    if (next != nullptr) StartWrite(next);
    if (half_close) StartWritesDone();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream is over; OnDone follows
    Answer answer;
    {
      absl::MutexLock lock(&mu_);
      auto it = pending_.find(incoming_.request_id());
      if (it != pending_.end()) {
        answer = std::move(it->second);
        pending_.erase(it);
      }
    }
    if (answer) {
      const auto code = static_cast<absl::StatusCode>(incoming_.code());
      answer(code, code == absl::StatusCode::kOk ? &incoming_.response() : nullptr);
    }
    StartRead(&incoming_);
  }

  void OnDone(const grpc::Status& status) override {
    std::map<std::string, Answer> unanswered;
    absl::StatusCode code;
    {
      absl::MutexLock lock(&mu_);
      ended_ = true;
      unanswered.swap(pending_);
      // A stream the gateway ended with OK while requests were outstanding lost them: UNKNOWN.
      code = abort_code_ != absl::StatusCode::kOk ? abort_code_
             : status.ok()                        ? absl::StatusCode::kUnknown
                           : static_cast<absl::StatusCode>(status.error_code());
    }
    for (auto& [id, answer] : unanswered) answer(code, nullptr);
    done_.Notify();  // last: the owner may delete this object once it sees it
  }

 private:
  grpc::ClientContext context_;
  v1::SegmentStreamResponse incoming_;
  absl::Mutex mu_;
  std::map<std::string, Answer> pending_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::SegmentRequest> writes_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool half_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  absl::StatusCode abort_code_ ABSL_GUARDED_BY(mu_) = absl::StatusCode::kOk;
  absl::Notification done_;
};

}  // namespace

// Sends requests and answers each exactly once, from a gRPC thread. Send never blocks.
class LoadGenerator::Sender {
 public:
  virtual ~Sender() = default;
  // `request` must stay valid until answered.
  virtual void Send(const LoadGenerator::Prepared& request, Answer answer) = 0;
  // Gives up on requests still unanswered: they are answered DEADLINE_EXCEEDED.
  virtual void Abort() {}
  // After the last answer: ends the streams, waiting at most `timeout`.
  virtual void Close(absl::Duration /*timeout*/) {}
};

namespace {

// Unary calls whose callbacks have not returned yet. The last callbacks may still be
// returning when the step sees its last answer: the destructor waits for them, so that no
// callback runs while the channel and the process are torn down. Declare it as its owner's
// last member, so that it waits before anything a callback uses is destroyed.
class CallsInFlight {
 public:
  ~CallsInFlight() {
    absl::MutexLock lock(&mu_);
    auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return calls_ == 0; };
    mu_.Await(absl::Condition(&none));
  }
  void Started() {
    absl::MutexLock lock(&mu_);
    ++calls_;
  }
  // The callback's last action.
  void Ended() {
    absl::MutexLock lock(&mu_);
    --calls_;
  }

 private:
  absl::Mutex mu_;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
};

// Segment calls, each with its own deadline: every call ends by itself.
class UnarySender final : public LoadGenerator::Sender {
 public:
  UnarySender(v1::Segmentation::Stub* stub, absl::Duration timeout)
      : stub_(stub), timeout_(timeout) {}

  void Send(const LoadGenerator::Prepared& request, Answer answer) override {
    struct Call {
      grpc::ClientContext context;
      v1::SegmentResponse response;
      Answer answer;
    };
    auto* call = new Call;
    call->answer = std::move(answer);
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
    in_flight_.Started();
    stub_->async()->Segment(&call->context, &request.segment, &call->response,
                            [this, call](grpc::Status status) {
                              const auto code = static_cast<absl::StatusCode>(status.error_code());
                              call->answer(code, status.ok() ? &call->response : nullptr);
                              delete call;
                              in_flight_.Ended();
                            });
  }

 private:
  v1::Segmentation::Stub* const stub_;
  const absl::Duration timeout_;
  CallsInFlight in_flight_;
};

// Worker/Infer calls of one item, each with its own deadline, answered as if a gateway had
// run the item alone: the statistics then compare the two targets field by field.
class WorkerSender final : public LoadGenerator::Sender {
 public:
  WorkerSender(v1::Worker::Stub* stub, absl::Duration timeout) : stub_(stub), timeout_(timeout) {}

  void Send(const LoadGenerator::Prepared& request, Answer answer) override {
    struct Call {
      grpc::ClientContext context;
      v1::InferResponse response;
      v1::SegmentResponse answer_response;
      Answer answer;
    };
    auto* call = new Call;
    call->answer = std::move(answer);
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
    in_flight_.Started();
    stub_->async()->Infer(
        &call->context, &request.infer, &call->response, [this, call](grpc::Status status) {
          auto code = static_cast<absl::StatusCode>(status.error_code());
          if (status.ok()) {
            // The call can succeed while the item fails (a bad image): the item's code counts.
            // A worker answering without the item lost it, as a stream ending early does.
            code = call->response.items_size() == 1
                       ? static_cast<absl::StatusCode>(call->response.items(0).code())
                       : absl::StatusCode::kUnknown;
          }
          if (code == absl::StatusCode::kOk) {
            // Only the timing: the statistics read nothing else, so the result is not copied.
            // No gateway queue; the worker's forward pass is the compute a gateway reports.
            v1::Timing* timing = call->answer_response.mutable_timing();
            timing->set_batch_size(1);
            timing->set_batch_cost(call->response.batch_cost());
            timing->set_compute_seconds(call->response.forward_seconds());
          }
          call->answer(code, code == absl::StatusCode::kOk ? &call->answer_response : nullptr);
          delete call;
          in_flight_.Ended();
        });
  }

 private:
  v1::Worker::Stub* const stub_;
  const absl::Duration timeout_;
  CallsInFlight in_flight_;
};

// One stream at a time, replaced by a new one when it ends (the gateway restarted, the
// connection broke) so that a client keeps measuring rather than failing forever.
class StreamSender final : public LoadGenerator::Sender {
 public:
  explicit StreamSender(v1::Segmentation::Stub* stub) : stub_(stub) {}

  ~StreamSender() override {
    // Close() waited for every stream; a failure path may not have: cancel and wait.
    absl::MutexLock lock(&mu_);
    for (auto& call : calls_) {
      if (!call->IsDone()) call->Abort(absl::StatusCode::kCancelled);
      call->WaitDone(absl::InfiniteDuration());
    }
  }

  void Send(const LoadGenerator::Prepared& request, Answer answer) override {
    for (;;) {
      StreamCall* call = nullptr;
      {
        absl::MutexLock lock(&mu_);
        if (calls_.empty() || calls_.back()->IsDone() || replace_) {
          // Ended streams are deleted here, off their own callbacks.
          calls_.erase(std::remove_if(calls_.begin(), calls_.end(),
                                      [](const auto& c) { return c->IsDone(); }),
                       calls_.end());
          calls_.push_back(std::make_unique<StreamCall>(stub_));
          replace_ = false;
        }
        call = calls_.back().get();
      }
      if (call->Send(request.segment, answer)) return;
      absl::MutexLock lock(&mu_);
      // Another sender may have replaced it already; replace only the one that refused.
      if (calls_.back().get() == call) replace_ = true;
    }
  }

  void Abort() override {
    absl::MutexLock lock(&mu_);
    for (auto& call : calls_) call->Abort(absl::StatusCode::kDeadlineExceeded);
  }

  void Close(absl::Duration timeout) override {
    absl::MutexLock lock(&mu_);
    for (auto& call : calls_) call->Close();
    for (auto& call : calls_) {
      if (!call->WaitDone(timeout)) {
        call->Abort(absl::StatusCode::kCancelled);
        call->WaitDone(absl::InfiniteDuration());
      }
    }
    calls_.clear();
  }

 private:
  v1::Segmentation::Stub* const stub_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<StreamCall>> calls_ ABSL_GUARDED_BY(mu_);
  bool replace_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

// The shared state of one step: its window, its statistics and what is outstanding. Shared
// by the callbacks, which may outlive the step's function by a moment.
class LoadGenerator::Step {
 public:
  // `senders` closed-loop clients (each measures at least one request, however slow the
  // server), or one open-loop arrival thread.
  Step(const LoadOptions& options, std::string load, double level, int senders, bool closed_loop)
      : window_(absl::Now(), options.warmup, options.duration, options.requests,
                closed_loop ? senders : 0),
        stats_(std::move(load), level),
        active_senders_(senders) {}

  // Whether a request due at `at` is sent and counted. With a positive `max_in_flight`, an
  // arrival finding that many outstanding is not sent: *dropped is set (and counted when
  // measured).
  Phase Admit(absl::Time at, int max_in_flight, bool* dropped) {
    absl::MutexLock lock(&mu_);
    const Phase phase = stopped_ ? Phase::kDone : window_.OnSend(at);
    if (phase == Phase::kDone) return phase;
    if (max_in_flight > 0 && outstanding_ >= max_in_flight) {
      if (phase == Phase::kMeasured) stats_.AddDropped(at);
      *dropped = true;
      return phase;
    }
    ++outstanding_;
    return phase;
  }

  void Answered(Phase phase, absl::Time sent, absl::StatusCode code,
                const v1::SegmentResponse* response) {
    const absl::Time now = absl::Now();
    absl::MutexLock lock(&mu_);
    --outstanding_;
    ++answered_;
    if (phase != Phase::kMeasured) return;
    Sample sample{sent, now, code};
    if (response != nullptr) {
      sample.batch_size = response->timing().batch_size();
      sample.queue_seconds = response->timing().queue_seconds();
      sample.compute_seconds = response->timing().compute_seconds();
    }
    stats_.Add(sample);
  }

  // A closed-loop client or the open-loop arrival thread sends nothing more.
  void SenderStopped() {
    absl::MutexLock lock(&mu_);
    --active_senders_;
  }

  // Sends nothing more, whatever the window says.
  void Stop() {
    absl::MutexLock lock(&mu_);
    stopped_ = true;
  }

  int64_t answered() {
    absl::MutexLock lock(&mu_);
    return answered_;
  }

  bool WaitIdle(absl::Duration timeout) {
    absl::MutexLock lock(&mu_);
    auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return outstanding_ == 0 && active_senders_ == 0;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
  }

  StepResult Result() {
    absl::MutexLock lock(&mu_);
    return stats_.Finish();
  }

 private:
  absl::Mutex mu_;
  MeasurementWindow window_ ABSL_GUARDED_BY(mu_);
  StepStats stats_ ABSL_GUARDED_BY(mu_);
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  int active_senders_ ABSL_GUARDED_BY(mu_);
  int64_t answered_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
};

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(512 << 20);
  args.SetMaxSendMessageSize(512 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

namespace {

absl::StatusOr<v1::ModelInfo> CheckModelOnce(v1::Segmentation::Stub& stub,
                                             const std::string& address, const std::string& model,
                                             absl::Duration connect_timeout) {
  grpc::ClientContext context;
  context.set_wait_for_ready(true);  // a gateway that is still starting gets the timeout
  context.set_deadline(absl::ToChronoTime(absl::Now() + connect_timeout));
  v1::ListModelsResponse models;
  const grpc::Status status = stub.ListModels(&context, v1::ListModelsRequest(), &models);
  if (!status.ok()) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach a deeplab gateway at ", address, " (ListModels: ",
                     absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
                     " ", status.error_message(), ")"));
  }
  std::vector<std::string> names;
  for (const v1::ModelInfo& info : models.models()) {
    if (info.name() != model) {
      names.push_back(info.name());
      continue;
    }
    if (!info.ready()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "weight set '", model, "' is not ready on any worker: ",
          info.not_ready_reasons().empty() ? std::string("no worker hosts it yet")
                                           : absl::StrJoin(info.not_ready_reasons(), "; ")));
    }
    return info;
  }
  return absl::NotFoundError(
      absl::StrCat("the gateway at ", address, " has no weight set '", model,
                   "'; it serves: ", names.empty() ? "none" : absl::StrJoin(names, ", ")));
}

absl::StatusOr<v1::ModelInfo> CheckWorkerModelOnce(v1::Worker::Stub& stub,
                                                   const std::string& address,
                                                   const std::string& model,
                                                   absl::Duration connect_timeout) {
  grpc::ClientContext context;
  context.set_wait_for_ready(true);  // a worker that is still starting gets the timeout
  context.set_deadline(absl::ToChronoTime(absl::Now() + connect_timeout));
  v1::StatusResponse worker;
  const grpc::Status status = stub.Status(&context, v1::StatusRequest(), &worker);
  if (!status.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "cannot reach a deeplab worker at ", address,
        " (Status: ", absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())),
        " ", status.error_message(), ")"));
  }
  std::vector<std::string> names;
  for (const v1::WeightSetStatus& ws : worker.weight_sets()) {
    if (ws.name() != model) {
      names.push_back(ws.name());
      continue;
    }
    if (!ws.ready()) {
      return absl::FailedPreconditionError(
          absl::StrCat("weight set '", model, "' is not ready on the worker at ", address, ": ",
                       ws.reason().empty() ? std::string("still loading") : ws.reason()));
    }
    // A draining worker refuses every Infer: measuring it would only count UNAVAILABLE.
    if (worker.draining()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the worker at ", address, " is draining (shutting down)"));
    }
    // What the gateway's ListModels says of it, for the report's header.
    v1::ModelInfo info = ModelInfoFromConfig(ws.name(), ws.config());
    info.set_ready(true);
    info.add_ready_workers(address);
    return info;
  }
  return absl::NotFoundError(
      absl::StrCat("the worker at ", address, " has no weight set '", model,
                   "'; it hosts: ", names.empty() ? "none" : absl::StrJoin(names, ", ")));
}

// Asks `once` until it succeeds or `wait_ready` has passed.
absl::StatusOr<v1::ModelInfo> AskUntilReady(
    const std::function<absl::StatusOr<v1::ModelInfo>()>& once, absl::Duration wait_ready) {
  const absl::Time give_up = absl::Now() + wait_ready;
  for (;;) {
    absl::StatusOr<v1::ModelInfo> info = once();
    if (info.ok() || absl::Now() >= give_up) return info;
    // Another process's state: there is no event to wait on. A just-started gateway learns
    // its workers' weight sets at its first status poll; a worker loads them after starting.
    absl::SleepFor(absl::Milliseconds(100));
  }
}

}  // namespace

absl::StatusOr<v1::ModelInfo> CheckModel(const std::shared_ptr<grpc::Channel>& channel,
                                         const std::string& address, const std::string& model,
                                         absl::Duration connect_timeout,
                                         absl::Duration wait_ready) {
  auto stub = v1::Segmentation::NewStub(channel);
  return AskUntilReady([&] { return CheckModelOnce(*stub, address, model, connect_timeout); },
                       wait_ready);
}

absl::StatusOr<v1::ModelInfo> CheckWorkerModel(const std::shared_ptr<grpc::Channel>& channel,
                                               const std::string& address, const std::string& model,
                                               absl::Duration connect_timeout,
                                               absl::Duration wait_ready) {
  auto stub = v1::Worker::NewStub(channel);
  return AskUntilReady([&] { return CheckWorkerModelOnce(*stub, address, model, connect_timeout); },
                       wait_ready);
}

LoadGenerator::LoadGenerator(std::shared_ptr<grpc::Channel> channel, LoadOptions options)
    : options_(std::move(options)) {
  if (options_.direct_to_worker) {
    worker_stub_ = v1::Worker::NewStub(channel);
  } else {
    stub_ = v1::Segmentation::NewStub(channel);
  }
  for (const BenchImage& image : options_.images) {
    Prepared& p = requests_.emplace_back();
    if (options_.direct_to_worker) {
      p.infer.set_model(options_.model);
      v1::InferItem* item = p.infer.add_items();
      item->set_id("bench");  // echoed back; one item per call, so nothing to match
      item->mutable_image()->set_encoded(image.encoded);
      *item->mutable_outputs() = options_.outputs;
    } else {
      p.segment.set_model(options_.model);
      p.segment.mutable_image()->set_encoded(image.encoded);
      *p.segment.mutable_outputs() = options_.outputs;
    }
  }
}

LoadGenerator::~LoadGenerator() = default;

const LoadGenerator::Prepared& LoadGenerator::NextRequest() {
  return requests_[next_image_++ % requests_.size()];
}

std::unique_ptr<LoadGenerator::Sender> LoadGenerator::MakeSender() {
  if (options_.direct_to_worker) {
    return std::make_unique<WorkerSender>(worker_stub_.get(), options_.timeout);
  }
  if (options_.stream) return std::make_unique<StreamSender>(stub_.get());
  return std::make_unique<UnarySender>(stub_.get(), options_.timeout);
}

void LoadGenerator::ClientNext(const std::shared_ptr<Step>& step, Sender* sender) {
  const absl::Time sent = absl::Now();
  const Phase phase = step->Admit(sent, 0, nullptr);
  if (phase == Phase::kDone) {
    step->SenderStopped();  // last touch of the step by this client
    return;
  }
  sender->Send(NextRequest(), [this, step, sender, phase, sent](
                                  absl::StatusCode code, const v1::SegmentResponse* response) {
    step->Answered(phase, sent, code, response);
    ClientNext(step, sender);
  });
}

StepResult LoadGenerator::RunConcurrency(int clients) {
  auto step = std::make_shared<Step>(options_, "concurrency", clients, clients, true);
  std::vector<std::unique_ptr<Sender>> senders;
  // Unary clients share one sender (calls are independent); stream clients own a stream.
  senders.push_back(MakeSender());
  for (int i = 1; i < clients && options_.stream; ++i) senders.push_back(MakeSender());
  for (int i = 0; i < clients; ++i) ClientNext(step, senders[i % senders.size()].get());
  return Finish(step, senders);
}

StepResult LoadGenerator::RunRate(double per_second) {
  auto step = std::make_shared<Step>(options_, "rate", per_second, 1, false);
  std::vector<std::unique_ptr<Sender>> senders;
  senders.push_back(MakeSender());
  for (int i = 1; i < options_.streams && options_.stream; ++i) senders.push_back(MakeSender());

  std::mt19937_64 random(options_.seed);
  std::exponential_distribution<double> gap(per_second);
  absl::Time due = absl::Now();
  for (uint64_t n = 0;; ++n) {
    const absl::Duration wait = due - absl::Now();
    if (wait > absl::ZeroDuration()) absl::SleepFor(wait);
    // Admitted at its due time, not when this thread got round to it: a late generator
    // shows as latency, as a late server would.
    const absl::Time sent = due;
    bool dropped = false;
    const Phase phase = step->Admit(sent, options_.max_in_flight, &dropped);
    due += absl::Seconds(options_.poisson ? gap(random) : 1.0 / per_second);
    if (phase == Phase::kDone) break;
    if (dropped) continue;
    senders[n % senders.size()]->Send(
        NextRequest(), [step, phase, sent](absl::StatusCode code, const v1::SegmentResponse* r) {
          step->Answered(phase, sent, code, r);
        });
  }
  step->SenderStopped();
  return Finish(step, senders);
}

StepResult LoadGenerator::Finish(const std::shared_ptr<Step>& step,
                                 const std::vector<std::unique_ptr<Sender>>& senders) {
  // Unary calls end by their deadlines; stream requests have none, so a step whose answers
  // stop coming for --timeout gives up on the rest (answered DEADLINE_EXCEEDED).
  for (int64_t seen = step->answered(); !step->WaitIdle(options_.timeout);) {
    const int64_t answered = step->answered();
    if (answered == seen) {
      step->Stop();
      for (const auto& sender : senders) sender->Abort();
      step->WaitIdle(absl::InfiniteDuration());
      break;
    }
    seen = answered;
  }
  for (const auto& sender : senders) sender->Close(options_.timeout);
  return step->Result();
}

}  // namespace deeplab::bench
