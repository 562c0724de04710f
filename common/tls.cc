#include "common/tls.h"

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"

namespace deeplab {
namespace {

absl::StatusOr<std::string> ReadPem(const std::string& what, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", what, " ", path));
  std::stringstream text;
  text << in.rdbuf();
  if (!absl::StrContains(text.str(), "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, " is not a PEM file"));
  }
  return text.str();
}

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

// The certificate and key texts parse, and the key is the certificate's (files named for
// the messages).
absl::Status CheckPair(const std::string& cert, const std::string& cert_file,
                       const std::string& key, const std::string& key_file) {
  std::unique_ptr<BIO, BioDeleter> cert_bio(BIO_new_mem_buf(cert.data(), static_cast<int>(cert.size())));
  std::unique_ptr<X509, X509Deleter> x509(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  if (x509 == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("certificate ", cert_file,
                                                   " holds no readable certificate"));
  }
  std::unique_ptr<BIO, BioDeleter> key_bio(BIO_new_mem_buf(key.data(), static_cast<int>(key.size())));
  std::unique_ptr<EVP_PKEY, KeyDeleter> pkey(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (pkey == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "private key ", key_file, " holds no readable private key (encrypted keys are not supported)"));
  }
  if (X509_check_private_key(x509.get(), pkey.get()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("private key ", key_file, " does not belong to certificate ", cert_file));
  }
  return absl::OkStatus();
}

// Reads and checks a certificate and its key; the PEM texts in *cert and *key.
absl::Status ReadPair(const std::string& cert_file, const std::string& key_file,
                      std::string* cert, std::string* key) {
  absl::StatusOr<std::string> cert_text = ReadPem("certificate", cert_file);
  if (!cert_text.ok()) return cert_text.status();
  absl::StatusOr<std::string> key_text = ReadPem("private key", key_file);
  if (!key_text.ok()) return key_text.status();
  *cert = *std::move(cert_text);
  *key = *std::move(key_text);
  return CheckPair(*cert, cert_file, *key, key_file);
}

absl::Status CheckBothOrNeither(const std::string& cert, const std::string& key,
                                const std::string& cert_flag, const std::string& key_flag) {
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(cert_flag, " and ", key_flag,
                                                   " go together: give both or neither"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateServerTls(const ServerTlsOptions& options) {
  if (absl::Status s = CheckBothOrNeither(options.cert_file, options.key_file, "--tls-cert",
                                          "--tls-key");
      !s.ok()) {
    return s;
  }
  if (!options.enabled()) {
    if (!options.client_ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first");
    }
    return absl::OkStatus();
  }
  std::string cert, key;
  if (absl::Status s = ReadPair(options.cert_file, options.key_file, &cert, &key); !s.ok()) {
    return s;
  }
  if (!options.client_ca_file.empty()) {
    if (auto ca = ReadPem("client CA", options.client_ca_file); !ca.ok()) return ca.status();
  }
  if (options.reload_interval < absl::Seconds(1)) {
    return absl::InvalidArgumentError("the TLS reload interval must be at least 1s");
  }
  return absl::OkStatus();
}

namespace {

// The client's PEM texts, read once and checked.
absl::StatusOr<grpc::SslCredentialsOptions> ReadClientTls(const ClientTlsOptions& options) {
  if (absl::Status s = CheckBothOrNeither(options.cert_file, options.key_file, "the client "
                                          "certificate", "its key");
      !s.ok()) {
    return s;
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.cert_file.empty()) {
    if (absl::Status s = ReadPair(options.cert_file, options.key_file, &ssl.pem_cert_chain,
                                  &ssl.pem_private_key);
        !s.ok()) {
      return s;
    }
  }
  if (!options.ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("CA", options.ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);  // empty: the system's CAs
  }
  return ssl;
}

}  // namespace

absl::Status ValidateClientTls(const ClientTlsOptions& options) {
  return ReadClientTls(options).status();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& options) {
  if (absl::Status s = ValidateServerTls(options); !s.ok()) return s;
  if (!options.enabled()) return grpc::InsecureServerCredentials();
  const auto refresh =
      static_cast<unsigned int>(absl::ToInt64Seconds(options.reload_interval));
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider;
  if (options.client_ca_file.empty()) {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        options.key_file, options.cert_file, refresh);
  } else {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        options.key_file, options.cert_file, options.client_ca_file, refresh);
  }
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  if (options.client_ca_file.empty()) {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientTlsOptions& options, grpc::ChannelArguments* args) {
  if (!options.enabled()) return grpc::InsecureChannelCredentials();
  absl::StatusOr<grpc::SslCredentialsOptions> ssl = ReadClientTls(options);
  if (!ssl.ok()) return ssl.status();
  if (!options.server_name.empty() && args != nullptr) {
    args->SetSslTargetNameOverride(options.server_name);
  }
  return grpc::SslCredentials(*ssl);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeClientChannel(const std::string& target,
                                                                 const ClientTlsOptions& options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      MakeChannelCredentials(options, &args);
  if (!credentials.ok()) return credentials.status();
  return grpc::CreateCustomChannel(target, *credentials, args);
}

void AddBearerToken(const std::string& token, grpc::ClientContext* context) {
  if (!token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read the token file ", path));
  std::string line;
  std::getline(in, line);
  std::string token(absl::StripAsciiWhitespace(line));
  if (token.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("the token file ", path, " is empty"));
  }
  return token;
}

}  // namespace deeplab
