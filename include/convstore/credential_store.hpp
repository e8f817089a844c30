// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "convstore/export.hpp"
#include "convstore/store.hpp"
#include "convstore/types.hpp"

namespace convstore {

using CredentialId = std::int64_t;

// A 256-bit application key for CredentialStore. convstore never writes a
// key to the database, a log or an error message: keep it in the app's
// secret manager or environment (to_base64() / from_base64()).
//
// The key's id() (16 hex digits derived from the key with keyed BLAKE2b) is
// stored beside each ciphertext, so that the store can say which key a
// secret needs; it reveals nothing about the key.
//
// The bytes are wiped when the object is destroyed.
class CONVSTORE_EXPORT SecretKey {
 public:
  static constexpr std::size_t size = 32;

  // A new random key (libsodium's CSPRNG).
  static SecretKey generate();
  // From exactly 32 raw bytes; Error(invalid_argument) otherwise.
  static SecretKey from_bytes(std::string_view bytes);
  // From the text to_base64() wrote (standard or URL-safe base64, with or
  // without padding; white space such as a trailing newline is skipped);
  // Error(invalid_argument) when it is not 32 bytes of
  // base64. The message never repeats the text.
  static SecretKey from_base64(std::string_view text);

  SecretKey(const SecretKey& other) = default;
  SecretKey& operator=(const SecretKey& other) = default;
  ~SecretKey();

  // The key as standard base64 (44 characters). Treat it as a secret.
  std::string to_base64() const;
  // The key's public id: 16 lowercase hex digits.
  const std::string& id() const noexcept { return id_; }
  // The raw bytes (for the library; treat them as a secret).
  const std::array<unsigned char, size>& bytes() const noexcept { return bytes_; }

 private:
  SecretKey();
  void derive_id();
  std::array<unsigned char, size> bytes_{};
  std::string id_;
};

// What is stored about a credential, without its secret.
struct CredentialInfo {
  CredentialId id = 0;
  UserId user_id = 0;
  std::string name;  // e.g. "telegram"
  bool active = true;
  std::string key_id;  // SecretKey::id() of the key that encrypted it
  Json metadata = Json::object();
  Timestamp created_at{};
  Timestamp updated_at{};  // last put, deactivate or rotation
  std::optional<Timestamp> deactivated_at;
};

// A credential with its secret decrypted.
struct Credential {
  CredentialInfo info;
  std::string secret;  // the bytes given to put(); treat as a secret
};

// What CredentialStore::rotate did.
struct RotationResult {
  std::int64_t rotated = 0;    // re-encrypted under the new key
  std::int64_t remaining = 0;  // still under the old key afterwards (0 unless
                               // another process wrote one meanwhile)
};

// Encrypted credentials (seed 003 `authentication_data`): a secret per user
// and name, such as a Telegram session string the background worker needs,
// reached as store.credentials().
//
// Secrets are sealed with XChaCha20-Poly1305 (libsodium, IETF variant) under
// an application key passed to each call, with a fresh random 192-bit nonce
// per write. The user id and the name are bound to the ciphertext as
// associated data, so a ciphertext copied onto another user's or name's row
// does not decrypt. Only the key's id, the nonce and the ciphertext are
// stored; nothing convstore writes, logs or throws contains a secret or a
// key.
//
// Rotation: rotate(old, new) re-encrypts, in batches of short transactions,
// every credential sealed under the old key; reads meanwhile work with
// whichever key each row is under (get() takes the keys to try).
//
// Thread safety: safe to use from many threads and processes at once.
// What the seal does not cover: someone who can write to the database can
// put back an older ciphertext of the same user and name (from a backup, or
// from before a new sign-in), and it opens; the `active` flag and the
// metadata are not sealed either. Protect write access to the database.
//
// Errors: throws convstore::Error. A secret under another key is
// Error(invalid_argument) naming both key ids; a ciphertext that does not
// authenticate (altered or damaged in the database) is Error(data_loss);
// neither ever returns garbage. A call that throws has written nothing,
// except rotate(), whose batches before the failing one stay committed.
class CONVSTORE_EXPORT CredentialStore {
 public:
  // Largest secret: 64 KiB.
  static constexpr std::size_t max_secret_bytes = 64 * 1024;

  // Stores `secret` (1 .. max_secret_bytes bytes, any bytes) for `user`
  // under `name` (1..200 characters), sealed with `key`, and returns what was
  // stored. Replaces an existing credential of that name (a new sign-in),
  // which becomes active again. `metadata` is a JSON object (null: {}), kept
  // in clear (never put secrets there). Error(not_found) for an unknown user.
  CredentialInfo put(UserId user, std::string_view name, std::string_view secret,
                     const SecretKey& key, const Json& metadata = Json::object());

  // The active credential `name` of `user`, decrypted with whichever of
  // `keys` sealed it; std::nullopt when there is none or it was
  // deactivated.
  std::optional<Credential> get(UserId user, std::string_view name, const SecretKey& key);
  std::optional<Credential> get(UserId user, std::string_view name,
                                const std::vector<SecretKey>& keys);

  // What is stored (active or not), without decrypting; std::nullopt when
  // there is nothing.
  std::optional<CredentialInfo> info(UserId user, std::string_view name);
  // The credentials of `user`, active or not, by name.
  std::vector<CredentialInfo> list(UserId user);

  // Marks the credential unusable (the Telegram session was revoked, the
  // sign-in failed): get() no longer returns it, put() revives it. Returns
  // false when there was nothing active to deactivate.
  bool deactivate(UserId user, std::string_view name);
  // Deletes the credential; returns false when there was none.
  bool remove(UserId user, std::string_view name);

  // Re-encrypts every credential sealed under `from` with `to`, in
  // transactions of at most `batch` rows (1..10000), each row with a new
  // nonce. Every row is decrypted before it is rewritten: a row that does
  // not authenticate stops the rotation with Error(data_loss) naming it;
  // its batch is rolled back, earlier batches stay under `to`, the rest
  // under `from`. Remove or put() the damaged credential again, then run
  // it again (it is safe to repeat); safe beside concurrent writers.
  RotationResult rotate(const SecretKey& from, const SecretKey& to, int batch = 500);

  // How many credentials each key id seals, active or not: after a rotation,
  // the old key may be destroyed once its id is gone from here.
  std::map<std::string, std::int64_t> key_usage();

 private:
  friend class Store;
  explicit CredentialStore(Store::Impl* impl);
  Store::Impl* impl_;
};

// JSON form of what is stored (no secret).
CONVSTORE_EXPORT Json to_json(const CredentialInfo& c);

}  // namespace convstore
