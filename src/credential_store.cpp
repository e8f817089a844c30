// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#include "convstore/credential_store.hpp"

#include <sodium.h>

#include <algorithm>

#include "crypto.hpp"
#include "store_helpers.hpp"
#include "store_impl.hpp"

namespace convstore {

using detail::check_id;
using detail::Connection;
using detail::ensure_sodium;
using detail::json_text;
using detail::Sql;
using detail::Stmt;

// ================================ keys =====================================

SecretKey::SecretKey() { ensure_sodium(); }

SecretKey::~SecretKey() { sodium_memzero(bytes_.data(), bytes_.size()); }

SecretKey SecretKey::generate() {
  SecretKey k;
  crypto_aead_xchacha20poly1305_ietf_keygen(k.bytes_.data());
  k.derive_id();
  return k;
}

SecretKey SecretKey::from_bytes(std::string_view bytes) {
  if (bytes.size() != size) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("a secret key is {} bytes, not {}", size, bytes.size()));
  }
  SecretKey k;
  std::copy(bytes.begin(), bytes.end(), k.bytes_.begin());
  k.derive_id();
  return k;
}

SecretKey SecretKey::from_base64(std::string_view text) {
  ensure_sodium();
  std::string raw;
  const bool ok = detail::unbase64(text, raw);
  const std::size_t got = raw.size();
  if (ok && got == size) {
    SecretKey k = from_bytes(raw);
    sodium_memzero(raw.data(), raw.size());
    return k;
  }
  sodium_memzero(raw.data(), raw.size());
  throw Error(ErrorCode::invalid_argument,
              ok ? fmt::format("a secret key is {} bytes, the base64 text holds {}", size, got)
                 : std::string("a secret key must be base64 text"));
}

std::string SecretKey::to_base64() const { return detail::base64(bytes_.data(), bytes_.size()); }

void SecretKey::derive_id() {
  // Keyed BLAKE2b of a fixed label: the same key always gives the same id,
  // and the id says nothing about the key.
  static constexpr char kLabel[] = "convstore credential key id v1";
  std::array<unsigned char, 8> digest{};
  crypto_generichash(digest.data(), digest.size(), reinterpret_cast<const unsigned char*>(kLabel),
                     sizeof(kLabel) - 1, bytes_.data(), bytes_.size());
  std::array<char, 17> hex{};
  sodium_bin2hex(hex.data(), hex.size(), digest.data(), digest.size());
  id_.assign(hex.data(), 16);
}

Json to_json(const CredentialInfo& c) {
  return Json{{"id", c.id},
              {"user_id", c.user_id},
              {"name", c.name},
              {"active", c.active},
              {"key_id", c.key_id},
              {"metadata", c.metadata},
              {"created_at", to_iso8601(c.created_at)},
              {"updated_at", to_iso8601(c.updated_at)},
              {"deactivated_at", c.deactivated_at ? Json(to_iso8601(*c.deactivated_at)) : Json()}};
}

namespace {

// ================================ sealing ==================================

constexpr const char* kAlgorithm = "xchacha20poly1305-ietf";
constexpr std::size_t kNonceBytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr std::size_t kTagBytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;
static_assert(SecretKey::size == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);

// What a row stores of a secret: nonce and ciphertext (with its tag), base64.
struct Sealed {
  std::string nonce;
  std::string ciphertext;
};

// The associated data: the row's owner and name, so that a ciphertext does
// not decrypt on any other row.
std::string associated(UserId user, std::string_view name) {
  return fmt::format("convstore credential v1\n{}\n{}", user, name);
}

Sealed seal(std::string_view secret, UserId user, std::string_view name, const SecretKey& key) {
  std::array<unsigned char, kNonceBytes> nonce{};
  randombytes_buf(nonce.data(), nonce.size());
  const std::string ad = associated(user, name);
  std::string out(secret.size() + kTagBytes, '\0');
  unsigned long long len = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(reinterpret_cast<unsigned char*>(out.data()), &len,
                                             reinterpret_cast<const unsigned char*>(secret.data()),
                                             secret.size(),
                                             reinterpret_cast<const unsigned char*>(ad.data()),
                                             ad.size(), nullptr, nonce.data(), key.bytes().data());
  return Sealed{detail::base64(nonce.data(), nonce.size()),
                detail::base64(reinterpret_cast<const unsigned char*>(out.data()), len)};
}

// A row as read.
struct Row {
  CredentialInfo info;
  std::string algorithm;
  Sealed sealed;
};

#define CS_CRED_COLS                                                                      \
  "id, user_id, name, active, key_id, metadata, created_at, updated_at, deactivated_at, " \
  "algorithm, nonce, ciphertext"

void bind_row(Stmt& st, Row& r) {
  CredentialInfo& c = r.info;
  st.out(c.id).out(c.user_id).out(c.name).out(c.active).out(c.key_id).out(c.metadata);
  st.out(c.created_at).out(c.updated_at).out(c.deactivated_at);
  st.out(r.algorithm).out(r.sealed.nonce).out(r.sealed.ciphertext);
}

std::optional<Row> fetch_row(Stmt& st) {
  Row r;
  bind_row(st, r);
  if (!st.one()) return std::nullopt;
  return r;
}

std::string describe(const CredentialInfo& c) {
  return fmt::format("credential '{}' of user {}", c.name, c.user_id);
}

[[noreturn]] void damaged(const CredentialInfo& c, std::string_view why) {
  throw Error(ErrorCode::data_loss, fmt::format("{} cannot be decrypted: {}", describe(c), why));
}

// Decrypts a row with `key` (whose id the caller matched): the plaintext, or
// Error(data_loss) when the stored bytes do not authenticate.
std::string open_sealed(const Row& r, const SecretKey& key) {
  const CredentialInfo& c = r.info;
  if (r.algorithm != kAlgorithm) {
    damaged(c, fmt::format("unknown algorithm '{}'", r.algorithm));
  }
  std::string nonce, ct;
  if (!detail::unbase64(r.sealed.nonce, nonce) || nonce.size() != kNonceBytes) {
    damaged(c, "its nonce is malformed");
  }
  if (!detail::unbase64(r.sealed.ciphertext, ct) || ct.size() < kTagBytes) {
    damaged(c, "its ciphertext is malformed");
  }
  const std::string ad = associated(c.user_id, c.name);
  std::string plain(ct.size() - kTagBytes, '\0');
  unsigned long long len = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<unsigned char*>(plain.data()), &len, nullptr,
          reinterpret_cast<const unsigned char*>(ct.data()), ct.size(),
          reinterpret_cast<const unsigned char*>(ad.data()), ad.size(),
          reinterpret_cast<const unsigned char*>(nonce.data()), key.bytes().data()) != 0) {
    sodium_memzero(plain.data(), plain.size());
    damaged(c,
            "the ciphertext does not authenticate under its key (it was altered, or moved from "
            "another row)");
  }
  plain.resize(len);
  return plain;
}

// The key among `keys` that sealed the row, or Error(invalid_argument).
const SecretKey& key_for(const CredentialInfo& c, const std::vector<SecretKey>& keys) {
  for (const SecretKey& k : keys) {
    if (k.id() == c.key_id) return k;
  }
  std::string given;
  for (const SecretKey& k : keys) given += (given.empty() ? "" : ", ") + k.id();
  throw Error(ErrorCode::invalid_argument,
              fmt::format("{} is sealed under key {}, not under the given key{} {}", describe(c),
                          c.key_id, keys.size() == 1 ? "" : "s", given.empty() ? "(none)" : given));
}

void check_name(std::string_view name) { check_id(name, "credential name"); }

const Sql kGet{"SELECT " CS_CRED_COLS " FROM credentials WHERE user_id = :u AND name = :n"};

}  // namespace

CredentialStore::CredentialStore(Store::Impl* impl) : impl_(impl) {}

// ================================ writing ==================================

CredentialInfo CredentialStore::put(UserId user, std::string_view name, std::string_view secret,
                                    const SecretKey& key, const Json& metadata) {
  check_name(name);
  if (secret.empty() || secret.size() > max_secret_bytes) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("a credential secret is 1 .. {} bytes, not {}", max_secret_bytes,
                            secret.size()));
  }
  const std::string md = detail::object_text(metadata, "credential metadata");
  const Sealed s = seal(secret, user, name, key);
  static const Sql q{
      "INSERT INTO credentials (user_id, name, algorithm, key_id, nonce, ciphertext, active, "
      "metadata, created_at, updated_at) VALUES (:u, :n, :a, :k, :no, :c, :on, :m, :t1, :t2) "
      "ON CONFLICT (user_id, name) DO UPDATE SET algorithm = excluded.algorithm, "
      "key_id = excluded.key_id, nonce = excluded.nonce, ciphertext = excluded.ciphertext, "
      "active = excluded.active, metadata = excluded.metadata, updated_at = excluded.updated_at, "
      "deactivated_at = NULL RETURNING " CS_CRED_COLS};
  try {
    return impl_->write(Op{"store credential", "user", user}, [&](Connection& c) {
      const Timestamp t = now();
      Stmt st(c, q);
      st.in(user).in(name).in(kAlgorithm).in(key.id()).in(s.nonce).in(s.ciphertext).in(true).in(md);
      st.in(t).in(t);
      auto row = fetch_row(st);
      if (!row) throw Error(ErrorCode::internal, "storing a credential returned no row");
      return row->info;
    });
  } catch (const Error& e) {
    if (e.code() == ErrorCode::not_found) {
      throw Error(ErrorCode::not_found, fmt::format("user {} not found", user), e.sqlstate());
    }
    throw;
  }
}

bool CredentialStore::deactivate(UserId user, std::string_view name) {
  check_name(name);
  static const Sql q{
      "UPDATE credentials SET active = :off, deactivated_at = :t1, updated_at = :t2 "
      "WHERE user_id = :u AND name = :n AND deactivated_at IS NULL"};
  return impl_->single(Op{"deactivate credential", "user", user}, [&](Connection& c) {
    const Timestamp t = now();
    Stmt st(c, q);
    st.in(false).in(t).in(t).in(user).in(name).one();
    return st.affected() > 0;
  });
}

bool CredentialStore::remove(UserId user, std::string_view name) {
  check_name(name);
  static const Sql q{"DELETE FROM credentials WHERE user_id = :u AND name = :n"};
  return impl_->single(Op{"remove credential", "user", user}, [&](Connection& c) {
    Stmt st(c, q);
    st.in(user).in(name).one();
    return st.affected() > 0;
  });
}

// ================================ reading ==================================

std::optional<Credential> CredentialStore::get(UserId user, std::string_view name,
                                               const SecretKey& key) {
  return get(user, name, std::vector<SecretKey>{key});
}

std::optional<Credential> CredentialStore::get(UserId user, std::string_view name,
                                               const std::vector<SecretKey>& keys) {
  check_name(name);
  auto row = impl_->read(Op{"get credential", "user", user}, [&](Connection& c) {
    Stmt st(c, kGet);
    st.in(user).in(name);
    return fetch_row(st);
  });
  if (!row || !row->info.active) return std::nullopt;
  const SecretKey& key = key_for(row->info, keys);
  std::string secret = open_sealed(*row, key);
  return Credential{std::move(row->info), std::move(secret)};
}

std::optional<CredentialInfo> CredentialStore::info(UserId user, std::string_view name) {
  check_name(name);
  return impl_->read(Op{"get credential", "user", user},
                     [&](Connection& c) -> std::optional<CredentialInfo> {
                       Stmt st(c, kGet);
                       st.in(user).in(name);
                       auto row = fetch_row(st);
                       if (!row) return std::nullopt;
                       return row->info;
                     });
}

std::vector<CredentialInfo> CredentialStore::list(UserId user) {
  static const Sql q{"SELECT " CS_CRED_COLS " FROM credentials WHERE user_id = :u ORDER BY name"};
  return impl_->read(Op{"list credentials", "user", user}, [&](Connection& c) {
    std::vector<CredentialInfo> out;
    Row r;
    Stmt st(c, q);
    st.in(user);
    bind_row(st, r);
    while (st.next()) out.push_back(r.info);
    return out;
  });
}

std::map<std::string, std::int64_t> CredentialStore::key_usage() {
  static const Sql q{"SELECT key_id, COUNT(*) FROM credentials GROUP BY key_id"};
  return impl_->read(Op{"count credentials by key"}, [&](Connection& c) {
    std::map<std::string, std::int64_t> out;
    std::string key;
    long long n = 0;
    Stmt st(c, q);
    st.out(key).out(n);
    while (st.next()) out[key] = n;
    return out;
  });
}

// ================================ rotation =================================

RotationResult CredentialStore::rotate(const SecretKey& from, const SecretKey& to, int batch) {
  detail::check_count(batch < 1 ? 0 : static_cast<std::size_t>(batch), 10000,
                      "rotation batch size");
  if (from.id() == to.id()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("rotation from key {} to the same key", from.id()));
  }
  static const Sql page{"SELECT " CS_CRED_COLS
                        " FROM credentials WHERE key_id = :k AND id > :after ORDER BY id "
                        "LIMIT :n"};
  // The row is rewritten only if it still holds what was decrypted: a put()
  // in between (a new nonce) wins, and the row is left as that put wrote it.
  static const Sql rewrite{
      "UPDATE credentials SET key_id = :k, nonce = :no, ciphertext = :c, updated_at = :t "
      "WHERE id = :id AND key_id = :old AND nonce = :old_nonce"};
  static const Sql left{"SELECT COUNT(*) FROM credentials WHERE key_id = :k"};
  // Counted once: its batches and the final count.
  return impl_->counted(Op{"rotate credential key"}, [&]() -> RotationResult {
    RotationResult result;
    CredentialId after = 0;
    for (;;) {
      struct Step {
        std::int64_t rotated = 0;
        std::size_t seen = 0;
        CredentialId last = 0;
      };
      Step step = impl_->write(Op{"rotate credential key"}, [&](Connection& c) {
        std::vector<Row> rows;
        {
          Row r;
          Stmt st(c, page);
          st.in(from.id()).in(after).in(batch);
          bind_row(st, r);
          while (st.next()) rows.push_back(r);
        }
        Step s;
        s.seen = rows.size();
        const Timestamp t = now();
        for (Row& r : rows) {
          s.last = r.info.id;
          std::string plain = open_sealed(r, from);
          const Sealed fresh = seal(plain, r.info.user_id, r.info.name, to);
          sodium_memzero(plain.data(), plain.size());
          Stmt up(c, rewrite);
          up.in(to.id()).in(fresh.nonce).in(fresh.ciphertext).in(t);
          up.in(r.info.id).in(from.id()).in(r.sealed.nonce).one();
          s.rotated += up.affected();
        }
        return s;
      });
      result.rotated += step.rotated;
      if (step.seen < static_cast<std::size_t>(batch)) break;
      after = step.last;
    }
    result.remaining = impl_->read(Op{"rotate credential key"}, [&](Connection& c) {
      long long n = 0;
      Stmt(c, left).in(from.id()).out(n).one();
      return static_cast<std::int64_t>(n);
    });
    return result;
  });
}

}  // namespace convstore
