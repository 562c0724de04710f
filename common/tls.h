// Transport security for every deeplab gRPC endpoint: TLS on the servers (gateway and
// worker), optional mutual TLS (a client CA the server requires client certificates from),
// and the matching client side (gateway to workers, the deeplab CLI, deeplab-bench).
//
// Empty options mean plaintext, for loopback development. Files are checked at start, so a
// missing file or a key that does not belong to its certificate is a clear error at once
// rather than failed handshakes later. Servers re-read rotated files (gRPC's file watcher,
// every reload_interval); clients read theirs when a channel is created.
#ifndef DEEPLAB_COMMON_TLS_H_
#define DEEPLAB_COMMON_TLS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace deeplab {

struct ServerTlsOptions {
  std::string cert_file;       // PEM certificate chain; empty: plaintext
  std::string key_file;        // PEM private key of cert_file
  std::string client_ca_file;  // PEM CA bundle: clients must present a certificate it signed
  absl::Duration reload_interval = absl::Seconds(60);

  bool enabled() const { return !cert_file.empty(); }
};

struct ClientTlsOptions {
  std::string ca_file;    // PEM CA bundle the server's certificate must chain to
  std::string cert_file;  // client certificate, for servers that require one (mutual TLS)
  std::string key_file;
  // Name the server's certificate must carry when it differs from the address dialled (an IP
  // address, or a pod behind a DNS name); empty: the address's host.
  std::string server_name;
  // TLS with the system's CAs even without ca_file.
  bool tls = false;

  bool enabled() const { return tls || !ca_file.empty() || !cert_file.empty(); }
};

// INVALID_ARGUMENT naming the file and the problem: a certificate without its key (or the
// reverse), an unreadable or non-PEM file, a key that does not match its certificate.
absl::Status ValidateServerTls(const ServerTlsOptions& options);
absl::Status ValidateClientTls(const ClientTlsOptions& options);

// Insecure credentials when !options.enabled(). Validates first.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerTlsOptions& options);
// Sets the target-name override on `args` when options.server_name is set.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientTlsOptions& options, grpc::ChannelArguments* args);

// A channel to `target` with these options and no message size limits (servers bound what
// they send); the clients' common way in.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeClientChannel(const std::string& target,
                                                                 const ClientTlsOptions& options);

// Adds "authorization: Bearer TOKEN" to the call (nothing for an empty token). Per call
// rather than as gRPC call credentials, which gRPC sends over TLS channels only: a token
// also works on loopback plaintext, where nothing crosses a network.
void AddBearerToken(const std::string& token, grpc::ClientContext* context);

// A token read from a file (first line, surrounding whitespace dropped); INVALID_ARGUMENT if
// the file cannot be read or is empty.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace deeplab

#endif  // DEEPLAB_COMMON_TLS_H_
