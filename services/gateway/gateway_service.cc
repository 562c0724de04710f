#include "services/gateway/gateway_service.h"

#include <deque>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/status_util.h"
#include "services/gateway/call_deadline.h"

namespace deeplab {
namespace {

// One Segment call: submitted at construction, finished when the gateway answers.
class SegmentReactor : public grpc::ServerUnaryReactor {
 public:
  SegmentReactor(Gateway* gateway, grpc::CallbackServerContext* context,
                 const v1::SegmentRequest* request, v1::SegmentResponse* response)
      : gateway_(gateway) {
    // gRPC's callback API hands the handler a const request, but the object is the call's
    // own (not a protobuf arena's) and gRPC does not read it after the handler: the gateway
    // may lend its image to a batch instead of copying it.
    id_ = gateway_->Submit(const_cast<v1::SegmentRequest*>(request), response,
                           CallDeadline(context),
                           [this](absl::Status s) { Finish(ToGrpcStatus(s)); });
  }
  void OnCancel() override { gateway_->Cancel(id_); }
  void OnDone() override { delete this; }

 private:
  Gateway* const gateway_;
  uint64_t id_ = 0;
};

// SegmentStream: reads requests, submits each, writes each answer as it completes (one
// write in flight at a time, as gRPC requires). At most kMaxInFlight requests of a stream
// are accepted and not yet written; reading pauses beyond that, which bounds the memory a
// fast sender can make the gateway hold. gRPC operations are started outside the lock,
// since their reactions may run inline.
class StreamReactor
    : public grpc::ServerBidiReactor<v1::SegmentRequest, v1::SegmentStreamResponse> {
 public:
  static constexpr int kMaxInFlight = 64;

  // `grant` null: every weight set allowed.
  StreamReactor(Gateway* gateway, grpc::CallbackServerContext* context,
                const TokenAuthenticator::Grant* grant)
      : gateway_(gateway), deadline_(CallDeadline(context)), grant_(grant) {
    StartRead(&incoming_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Actions actions;
      {
        absl::MutexLock lock(&mu_);
        reads_done_ = true;
        actions.finish = ShouldFinishLocked();
      }
      Apply(actions);
      return;
    }
    auto item = std::make_shared<Item>();
    item->request = std::move(incoming_);
    uint64_t key;
    bool read_more;
    {
      absl::MutexLock lock(&mu_);
      key = next_key_++;
      items_[key] = item;
      ++in_flight_;
      read_more = in_flight_ < kMaxInFlight;
      reading_paused_ = !read_more;
    }
    if (grant_ != nullptr && !grant_->Allows(item->request.model())) {
      OnAnswered(key, TokenAuthenticator::Authorize(*grant_, item->request.model()));
      if (read_more) StartRead(&incoming_);
      return;
    }
    const uint64_t id = gateway_->Submit(
        &item->request, &item->response, deadline_,
        [this, key](absl::Status s) { OnAnswered(key, std::move(s)); });
    {
      absl::MutexLock lock(&mu_);
      item->id = id;
    }
    if (read_more) StartRead(&incoming_);
  }

  void OnWriteDone(bool ok) override {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      outbox_.pop_front();
      --in_flight_;
      if (!ok) broken_ = true;  // the client went away; answers still arrive and are dropped
      if (reading_paused_ && !reads_done_ && in_flight_ < kMaxInFlight) {
        reading_paused_ = false;
        actions.read = true;
      }
      actions.write = NextWriteLocked();
      actions.finish = ShouldFinishLocked();
    }
    Apply(actions);
  }

  void OnCancel() override {
    std::vector<uint64_t> ids;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [key, item] : items_) ids.push_back(item->id);
    }
    for (uint64_t id : ids) gateway_->Cancel(id);
  }

  void OnDone() override { delete this; }

 private:
  struct Item {
    uint64_t id = 0;
    v1::SegmentRequest request;
    v1::SegmentResponse response;
  };
  struct Actions {
    bool read = false;
    const v1::SegmentStreamResponse* write = nullptr;
    bool finish = false;
  };

  void Apply(const Actions& actions) {
    if (actions.read) StartRead(&incoming_);
    if (actions.write != nullptr) StartWrite(actions.write);
    if (actions.finish) Finish(grpc::Status::OK);
  }

  void OnAnswered(uint64_t key, absl::Status status) {
    Actions actions;
    {
      absl::MutexLock lock(&mu_);
      auto it = items_.find(key);
      std::shared_ptr<Item> item = it->second;
      items_.erase(it);
      v1::SegmentStreamResponse out;
      out.set_request_id(item->request.request_id().empty() ? item->response.request_id()
                                                            : item->request.request_id());
      if (out.request_id().empty()) out.set_request_id(std::to_string(item->id));
      out.set_code(static_cast<int>(status.code()));
      if (status.ok()) {
        *out.mutable_response() = std::move(item->response);
      } else {
        out.set_message(std::string(status.message()));
      }
      outbox_.push_back(std::move(out));
      actions.write = NextWriteLocked();
      actions.finish = ShouldFinishLocked();
    }
    Apply(actions);
  }

  // The next answer to write, or null if a write is in flight or nothing waits.
  const v1::SegmentStreamResponse* NextWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (broken_) {  // nobody reads any more: drop the answers
      in_flight_ -= static_cast<int>(outbox_.size()) - (writing_ ? 1 : 0);
      if (writing_) {
        outbox_.erase(outbox_.begin() + 1, outbox_.end());
      } else {
        outbox_.clear();
      }
      return nullptr;
    }
    if (writing_ || outbox_.empty()) return nullptr;
    writing_ = true;
    return &outbox_.front();  // deque elements stay put while others are appended
  }

  bool ShouldFinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (reads_done_ && in_flight_ == 0 && !writing_ && !finished_) {
      finished_ = true;
      return true;
    }
    return false;
  }

  Gateway* const gateway_;
  const absl::Time deadline_;
  const TokenAuthenticator::Grant* const grant_;
  v1::SegmentRequest incoming_;
  absl::Mutex mu_;
  std::map<uint64_t, std::shared_ptr<Item>> items_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::SegmentStreamResponse> outbox_ ABSL_GUARDED_BY(mu_);
  uint64_t next_key_ ABSL_GUARDED_BY(mu_) = 0;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // accepted and not yet written or dropped
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool reading_paused_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// A stream refused before it read anything (no valid token).
class RefusedStream
    : public grpc::ServerBidiReactor<v1::SegmentRequest, v1::SegmentStreamResponse> {
 public:
  explicit RefusedStream(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context,
                                    const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace

absl::StatusOr<const TokenAuthenticator::Grant*> SegmentationService::Authenticate(
    const grpc::CallbackServerContext* context) const {
  if (auth_ == nullptr) return nullptr;
  return auth_->Authenticate(CallAuthorization(context));
}

grpc::ServerUnaryReactor* SegmentationService::Segment(grpc::CallbackServerContext* context,
                                                       const v1::SegmentRequest* request,
                                                       v1::SegmentResponse* response) {
  absl::StatusOr<const TokenAuthenticator::Grant*> grant = Authenticate(context);
  if (!grant.ok()) return FinishNow(context, grant.status());
  if (*grant != nullptr && !(*grant)->Allows(request->model())) {
    return FinishNow(context, TokenAuthenticator::Authorize(**grant, request->model()));
  }
  return new SegmentReactor(gateway_, context, request, response);
}

grpc::ServerBidiReactor<v1::SegmentRequest, v1::SegmentStreamResponse>*
SegmentationService::SegmentStream(grpc::CallbackServerContext* context) {
  absl::StatusOr<const TokenAuthenticator::Grant*> grant = Authenticate(context);
  if (!grant.ok()) return new RefusedStream(grant.status());
  return new StreamReactor(gateway_, context, *grant);
}

grpc::ServerUnaryReactor* SegmentationService::ListModels(grpc::CallbackServerContext* context,
                                                          const v1::ListModelsRequest*,
                                                          v1::ListModelsResponse* response) {
  absl::StatusOr<const TokenAuthenticator::Grant*> grant = Authenticate(context);
  if (!grant.ok()) return FinishNow(context, grant.status());
  *response = gateway_->ListModels();
  if (*grant != nullptr) {
    // Only the weight sets this token may use.
    auto* models = response->mutable_models();
    for (int i = models->size() - 1; i >= 0; --i) {
      if (!(*grant)->Allows(models->Get(i).name())) models->DeleteSubrange(i, 1);
    }
  }
  return FinishNow(context, absl::OkStatus());
}

}  // namespace deeplab
