// Unit tests of the pieces behind issue 13: bearer tokens (parsing, authentication,
// authorization), TLS option checks without certificates, and the log line format.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/civil_time.h"
#include "common/log.h"
#include "common/tls.h"
#include "services/gateway/auth.h"

namespace deeplab {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// sha256("alpha"), as `printf %s alpha | sha256sum` prints it.
constexpr char kAlphaHash[] = "8ed3f6ad685b959ead7022518e1af76cd816f8e8ec7ccdda1ed4018e8f2223f8";

TEST(Sha256HexTest, KnownDigest) { EXPECT_EQ(Sha256Hex("alpha"), kAlphaHash); }

TEST(TokenAuthenticatorTest, AuthenticatesAndLimitsToWeightSets) {
  auto auth = TokenAuthenticator::FromText(
      absl::StrCat("token { name: \"lab\" sha256: \"", kAlphaHash,
                   "\" weight_sets: \"pathology_paip\" }\n",
                   "token { sha256: \"", Sha256Hex("beta"), "\" }\n"));
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ((*auth)->size(), 2);

  auto lab = (*auth)->Authenticate("Bearer alpha");
  ASSERT_TRUE(lab.ok());
  EXPECT_EQ((*lab)->name, "lab");
  EXPECT_TRUE(TokenAuthenticator::Authorize(**lab, "pathology_paip").ok());
  const absl::Status denied = TokenAuthenticator::Authorize(**lab, "demo");
  EXPECT_TRUE(absl::IsPermissionDenied(denied));
  EXPECT_THAT(denied.message(), HasSubstr("'lab' may not use weight set 'demo'"));

  auto any = (*auth)->Authenticate("Bearer beta");
  ASSERT_TRUE(any.ok());
  EXPECT_EQ((*any)->name, "token 2");
  EXPECT_TRUE(TokenAuthenticator::Authorize(**any, "anything").ok());

  for (const char* bad : {"", "alpha", "Bearer ", "Bearer gamma", "Basic YWxwaGE="}) {
    auto s = (*auth)->Authenticate(bad);
    EXPECT_TRUE(absl::IsUnauthenticated(s.status())) << bad;
    EXPECT_THAT(s.status().message(), Not(HasSubstr("gamma")));
  }
}

TEST(TokenAuthenticatorTest, BadFilesAreRefusedWithTheReason) {
  auto expect_error = [](const std::string& text, const std::string& why) {
    auto auth = TokenAuthenticator::FromText(text);
    ASSERT_FALSE(auth.ok()) << text;
    EXPECT_TRUE(absl::IsInvalidArgument(auth.status()));
    EXPECT_THAT(auth.status().message(), HasSubstr(why)) << text;
  };
  expect_error("", "lists no token");
  expect_error("token { sha256: \"abc\" }", "64 lower-case hex digits");
  expect_error(absl::StrCat("token { sha256: \"", absl::AsciiStrToUpper(kAlphaHash), "\" }"),
               "64 lower-case hex digits");
  expect_error(absl::StrCat("token { sha256: \"", kAlphaHash, "\" }\ntoken { sha256: \"",
                            kAlphaHash, "\" }"),
               "listed twice");
  expect_error("token { secret: \"x\" }", "line 1");
  EXPECT_FALSE(TokenAuthenticator::FromFile("/nonexistent/tokens.pbtxt").ok());
}

TEST(TlsOptionsTest, HalfAPairOrAMissingFileIsAnError) {
  ServerTlsOptions server;
  EXPECT_TRUE(ValidateServerTls(server).ok());  // plaintext
  server.client_ca_file = "/tmp/ca.crt";
  EXPECT_THAT(ValidateServerTls(server).message(), HasSubstr("mutual TLS is TLS first"));
  server = ServerTlsOptions();
  server.cert_file = "/nonexistent/server.crt";
  EXPECT_THAT(ValidateServerTls(server).message(), HasSubstr("give both or neither"));
  server.key_file = "/nonexistent/server.key";
  EXPECT_THAT(ValidateServerTls(server).message(), HasSubstr("cannot read certificate"));

  ClientTlsOptions client;
  EXPECT_FALSE(client.enabled());
  EXPECT_TRUE(ValidateClientTls(client).ok());
  client.ca_file = "/nonexistent/ca.crt";
  EXPECT_TRUE(client.enabled());
  EXPECT_THAT(ValidateClientTls(client).message(), HasSubstr("cannot read CA"));
  grpc::ChannelArguments args;
  EXPECT_FALSE(MakeChannelCredentials(client, &args).ok()) << "never a plaintext fallback";
}

TEST(LogLineTest, UtcTimestampToTheMillisecond) {
  const absl::Time t = absl::FromCivil(absl::CivilSecond(2026, 12, 4, 23, 59, 1), absl::UTCTimeZone()) +
                       absl::Milliseconds(123);
  EXPECT_EQ(FormatLogLine(t, "deeplab-worker", "weight set demo ready"),
            "2026-12-04T23:59:01.123Z deeplab-worker: weight set demo ready\n");
}

}  // namespace
}  // namespace deeplab
