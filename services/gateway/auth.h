// Bearer-token authentication at the gateway (--tokens-file): a call carries
// "authorization: Bearer TOKEN"; the token's sha256 must be in the file, and a token may be
// limited to some weight sets. No token or an unknown one: UNAUTHENTICATED; a known token
// for another weight set: PERMISSION_DENIED. Messages never contain the token.
//
// Immutable after construction; safe from any thread.
#ifndef DEEPLAB_SERVICES_GATEWAY_AUTH_H_
#define DEEPLAB_SERVICES_GATEWAY_AUTH_H_

#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "deeplab/v1/access.pb.h"

namespace deeplab {

class TokenAuthenticator {
 public:
  // Parses the text-format AccessTokens; INVALID_ARGUMENT (with the line) for a bad file, a
  // hash that is not 64 lower-case hex digits, or a hash listed twice.
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> FromText(const std::string& text);
  static absl::StatusOr<std::unique_ptr<TokenAuthenticator>> FromFile(const std::string& path);

  struct Grant {
    std::string name;
    std::set<std::string> weight_sets;  // empty: all

    bool Allows(const std::string& weight_set) const {
      return weight_sets.empty() || weight_sets.count(weight_set) > 0;
    }
  };

  // `authorization` is the call's "authorization" metadata value (empty when absent).
  absl::StatusOr<const Grant*> Authenticate(absl::string_view authorization) const;
  // PERMISSION_DENIED unless the grant covers the weight set.
  static absl::Status Authorize(const Grant& grant, const std::string& weight_set);
  // Both: OK when `authorization` carries a token that may use `weight_set`.
  absl::Status Allow(absl::string_view authorization, const std::string& weight_set) const;

  int size() const { return static_cast<int>(grants_.size()); }

 private:
  std::map<std::string, Grant> grants_;  // by sha256 hex
};

// Lower-case hex sha256 of `bytes`.
std::string Sha256Hex(absl::string_view bytes);

}  // namespace deeplab

#endif  // DEEPLAB_SERVICES_GATEWAY_AUTH_H_
