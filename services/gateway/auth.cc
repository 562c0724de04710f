#include "services/gateway/auth.h"

#include <openssl/evp.h>

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace deeplab {
namespace {

// Collects the parser's messages ("line 3: ...") instead of printing them.
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, int column, const std::string& message) override {
    if (text.empty()) text = absl::StrCat("line ", line + 1, " column ", column + 1, ": ", message);
  }
  std::string text;
};

bool IsLowerHex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(c) && !(c >= 'a' && c <= 'f')) return false;
  }
  return true;
}

// Equal lengths assumed (both sha256 hex): time independent of where they differ.
bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  unsigned char diff = static_cast<unsigned char>(a.size() ^ b.size());
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

}  // namespace

std::string Sha256Hex(absl::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::FromText(
    const std::string& text) {
  v1::AccessTokens tokens;
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(text, &tokens)) {
    return absl::InvalidArgumentError(absl::StrCat("bad tokens file: ", errors.text));
  }
  auto out = std::unique_ptr<TokenAuthenticator>(new TokenAuthenticator());
  for (int i = 0; i < tokens.token_size(); ++i) {
    const v1::AccessToken& t = tokens.token(i);
    const std::string which =
        absl::StrCat("token ", i + 1, t.name().empty() ? "" : absl::StrCat(" (", t.name(), ")"));
    if (!IsLowerHex64(t.sha256())) {
      return absl::InvalidArgumentError(absl::StrCat(
          which, ": sha256 must be 64 lower-case hex digits (printf %s \"$TOKEN\" | sha256sum)"));
    }
    if (out->grants_.count(t.sha256()) > 0) {
      return absl::InvalidArgumentError(absl::StrCat(which, ": the same token is listed twice"));
    }
    Grant& g = out->grants_[t.sha256()];
    g.name = t.name().empty() ? absl::StrCat("token ", i + 1) : t.name();
    g.weight_sets.insert(t.weight_sets().begin(), t.weight_sets().end());
  }
  if (out->grants_.empty()) {
    return absl::InvalidArgumentError("the tokens file lists no token: nobody could call");
  }
  return out;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>> TokenAuthenticator::FromFile(
    const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read the tokens file ", path));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<std::unique_ptr<TokenAuthenticator>> out = FromText(text.str());
  if (!out.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", out.status().message()));
  }
  return out;
}

absl::StatusOr<const TokenAuthenticator::Grant*> TokenAuthenticator::Authenticate(
    absl::string_view authorization) const {
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "this gateway requires a token: send the metadata \"authorization: Bearer TOKEN\"");
  }
  absl::string_view token = authorization;
  if (!absl::ConsumePrefix(&token, "Bearer ") && !absl::ConsumePrefix(&token, "bearer ")) {
    return absl::UnauthenticatedError(
        "the authorization metadata must be \"Bearer TOKEN\"");
  }
  token = absl::StripAsciiWhitespace(token);
  const std::string hash = Sha256Hex(token);
  for (const auto& [known, grant] : grants_) {
    if (ConstantTimeEquals(known, hash)) return &grant;
  }
  return absl::UnauthenticatedError("the token is not valid for this gateway");
}

absl::Status TokenAuthenticator::Allow(absl::string_view authorization,
                                       const std::string& weight_set) const {
  absl::StatusOr<const Grant*> grant = Authenticate(authorization);
  if (!grant.ok()) return grant.status();
  return Authorize(**grant, weight_set);
}

absl::Status TokenAuthenticator::Authorize(const Grant& grant, const std::string& weight_set) {
  if (grant.Allows(weight_set)) return absl::OkStatus();
  std::string name = weight_set.substr(0, 64);
  return absl::PermissionDeniedError(absl::StrCat("the token '", grant.name,
                                                  "' may not use weight set '", name, "'"));
}

}  // namespace deeplab
