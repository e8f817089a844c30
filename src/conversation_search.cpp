// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// ConversationStore::search (full-text search over message content) and
// ConversationStore::context_window (the newest messages that fit a token
// budget).
#include <algorithm>
#include <cctype>
#include <charconv>
#include <iterator>
#include <limits>

#include "convstore/conversation_store.hpp"
#include "db/codec.hpp"
#include "store_helpers.hpp"
#include "store_impl.hpp"
#include "text_words.hpp"

namespace convstore {

using detail::Backend;
using detail::check_text;
using detail::Connection;
using detail::fetch_all;
using detail::fetch_one;
using detail::Sql;
using detail::Stmt;

std::int64_t estimate_tokens(const Message& m) noexcept {
  return static_cast<std::int64_t>((m.content.size() + 3) / 4) + 4;
}

namespace {

// ================================= search ==================================

// One term of a search text: its words, in order, and whether the last one
// is a prefix. `raw` is the term as typed (PostgreSQL parses it itself).
struct Term {
  std::string raw;
  std::vector<std::string> words;
  bool prefix = false;
};

bool is_space(char ch) {
  auto c = static_cast<unsigned char>(ch);
  return c < 0x80 && std::isspace(c);
}

// The terms of a search text: "quoted phrases" (an unpaired quote is plain
// text), and runs of anything else between white space and quotes; a
// trailing '*' makes the term a prefix. Terms without a word are dropped.
std::vector<Term> parse_terms(std::string_view text) {
  std::vector<Term> terms;
  std::size_t i = 0;
  const std::size_t n = text.size();
  while (i < n) {
    if (is_space(text[i])) {
      ++i;
      continue;
    }
    Term t;
    if (text[i] == '"') {
      std::size_t close = text.find('"', i + 1);
      if (close == std::string_view::npos) {
        ++i;  // an unpaired quote: punctuation
        continue;
      }
      t.raw = std::string(text.substr(i + 1, close - i - 1));
      i = close + 1;
      if (i < n && text[i] == '*') {
        t.prefix = true;
        ++i;
      }
    } else {
      std::size_t j = i;
      while (j < n && !is_space(text[j]) && text[j] != '"') ++j;
      t.raw = std::string(text.substr(i, j - i));
      i = j;
      t.prefix = t.raw.back() == '*';
    }
    t.words = detail::words_of(t.raw);
    if (!t.words.empty()) terms.push_back(std::move(t));
  }
  return terms;
}

// SQLite: every term an FTS5 phrase of quoted words (a quoted string is
// never an operator), a prefix marked by '*' after it; all required.
std::string fts5_query(const std::vector<Term>& terms) {
  std::string q;
  for (const auto& t : terms) {
    if (!q.empty()) q += ' ';
    q += '"';
    for (std::size_t i = 0; i < t.words.size(); ++i) {
      if (i > 0) q += ' ';
      q += t.words[i];
    }
    q += '"';
    if (t.prefix) q += '*';
  }
  return q;
}

// A PostgreSQL array literal of text: every element double-quoted, with '"'
// and '\' escaped.
std::string pg_text_array(const std::vector<std::string>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char ch : items[i]) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  out += '}';
  return out;
}

// The terms of a search for the query of CS_PG_TSQUERY, as three arrays.
struct PgTerms {
  std::string texts;     // each term's text, without a prefix's '*'
  std::string prefixes;  // whether it is a prefix
  std::string lexemes;   // a prefix's text as one tsquery lexeme with :*, or ""
};

// PostgreSQL: every term's text goes through PostgreSQL's own parser
// (phraseto_tsquery), which splits it as it split the content: an address,
// a path, a version or a decimal number stays one lexeme. For a prefix
// term, the last lexeme of that phrase is a prefix, OR the whole text as
// one lexeme prefix: "bob@example*" is the start of the lexeme
// 'bob@example.com' although the parser splits "bob@example" in two, and
// "well-kn*" is the start of 'well-known'.
PgTerms pg_terms(const std::vector<Term>& terms) {
  std::vector<std::string> texts;
  std::vector<std::string> lexemes;
  std::string prefixes = "{";
  for (const auto& t : terms) {
    std::string text = t.raw;
    std::string lexeme;
    if (t.prefix) {
      while (!text.empty() && text.back() == '*') text.pop_back();
      // A tsquery lexeme holds at most 2 KB; the content's longer words are
      // not indexed either.
      if (!text.empty() && text.size() <= 1000) {
        lexeme = "'";
        for (char ch : text) {
          if (ch == '\\') lexeme += '\\';
          if (ch == '\'') lexeme += '\'';
          lexeme += ch;
        }
        lexeme += "':*";
      }
    }
    texts.push_back(std::move(text));
    lexemes.push_back(std::move(lexeme));
    if (prefixes.size() > 1) prefixes += ',';
    prefixes += t.prefix ? "t" : "f";
  }
  return {pg_text_array(texts), prefixes + "}", pg_text_array(lexemes)};
}

// The tsquery of a search: every term's query ANDed. y.q is the term's
// phrase; a prefix term marks its last lexeme a prefix (the text form of a
// phrase ends with that lexeme) and ORs the term as one lexeme, lower-cased
// as the 'simple' dictionary does.
#define CS_PG_TSQUERY                                                                       \
  "(SELECT convstore_tsquery_and(CASE WHEN NOT x.p THEN y.q ELSE COALESCE(y.pq || "         \
  "CAST(lower(NULLIF(x.l, '')) AS tsquery), y.pq) END) FROM unnest(CAST(:t AS text[]), "    \
  "CAST(:p AS boolean[]), CAST(:l AS text[])) AS x(t, p, l) CROSS JOIN LATERAL (SELECT q, " \
  "CASE WHEN numnode(q) = 0 THEN q ELSE CAST(CAST(q AS text) || ':*' AS tsquery) END AS "   \
  "pq FROM (SELECT phraseto_tsquery('simple', x.t) AS q) z) y)"

// Ranks are compared and carried in cursors as integers (rank * 1e12), so
// that a page boundary is exact on both backends.
constexpr double kRankScale = 1e12;

std::string search_cursor(long long score, long long id) {
  return fmt::format("s1.{}.{}", score, id);
}

std::pair<long long, long long> parse_search_cursor(const std::string& cursor) {
  auto bad = [&]() -> Error {
    return Error(ErrorCode::invalid_argument, fmt::format("malformed search cursor '{}'", cursor));
  };
  std::string_view v(cursor);
  if (v.substr(0, 3) != "s1.") throw bad();
  v.remove_prefix(3);
  auto dot = v.find('.');
  if (dot == std::string_view::npos) throw bad();
  long long score = 0, id = 0;
  auto parse = [&](std::string_view part, long long& out) {
    if (part.empty()) throw bad();
    auto r = std::from_chars(part.data(), part.data() + part.size(), out);
    if (r.ec != std::errc() || r.ptr != part.data() + part.size()) throw bad();
  };
  parse(v.substr(0, dot), score);
  parse(v.substr(dot + 1), id);
  if (score < 0 || id <= 0) throw bad();
  return {score, id};
}

// PostgreSQL's headline marks matches with these (private-use characters),
// replaced by the caller's markers afterwards: ts_headline options cannot
// carry every string. A content that holds one of them gets a headline
// with two private-use characters that it does not hold (marks_absent_from).
constexpr std::string_view kOpenMark = "\xEE\x80\x80";   // U+E000
constexpr std::string_view kCloseMark = "\xEE\x80\x81";  // U+E001

struct Marks {
  std::string open;
  std::string close;
};

std::string utf8(char32_t cp) {
  std::string out;
  if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// Two private-use characters (U+E000 .. U+F8FF, then planes 15 and 16) that
// `content` does not hold: marks that cannot be mistaken for its text. Only
// a content holding nearly all of the 137,000 candidates has no two free; it
// keeps the usual placeholders (its own may then be taken for marks).
Marks marks_absent_from(const std::string& content) {
  std::vector<std::string> found;
  auto try_range = [&](char32_t first, char32_t last) {
    for (char32_t cp = first; cp <= last && found.size() < 2; ++cp) {
      std::string s = utf8(cp);
      if (content.find(s) == std::string::npos) found.push_back(std::move(s));
    }
  };
  try_range(0xE000, 0xF8FF);
  try_range(0xF0000, 0xFFFFD);
  try_range(0x100000, 0x10FFFD);
  if (found.size() < 2) return {std::string(kOpenMark), std::string(kCloseMark)};
  return {found[0], found[1]};
}

std::string headline_options(const Marks& m, const SearchQuery& q) {
  return fmt::format("StartSel=\"{}\", StopSel=\"{}\", MaxWords={}, MinWords={}, ShortWord=0",
                     m.open, m.close, q.snippet_words,
                     std::max<std::size_t>(1, q.snippet_words / 2));
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  std::size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

// A headline from ts_headline with the caller's markers, and the ellipsis
// where it does not reach the start or the end of the content.
std::string pg_snippet(std::string headline, const std::string& content, const SearchQuery& q,
                       const Marks& marks) {
  std::string plain = headline;
  replace_all(plain, marks.open, "");
  replace_all(plain, marks.close, "");
  replace_all(headline, marks.open, q.highlight_open);
  replace_all(headline, marks.close, q.highlight_close);
  auto pos = content.find(plain);
  if (pos != std::string::npos && !plain.empty()) {
    if (pos > 0) headline = q.snippet_ellipsis + headline;
    if (pos + plain.size() < content.size()) headline += q.snippet_ellipsis;
  }
  return headline;
}

// The filters of a search, as SQL over messages m and conversations c.
std::string search_filters(const SearchQuery& q) {
  std::string sql;
  if (q.user_id) sql += " AND c.user_id = :uid";
  if (q.channel) sql += " AND c.channel = :ch";
  if (q.conversation_id) sql += " AND m.conversation_id = :cid";
  if (q.role) sql += " AND m.role = :role";
  if (q.from) sql += " AND m.created_at >= :from";
  if (q.to) sql += " AND m.created_at < :to";
  return sql;
}

void bind_filters(Stmt& s, const SearchQuery& q) {
  if (q.user_id) s.in(*q.user_id);
  if (q.channel) s.in(*q.channel);
  if (q.conversation_id) s.in(*q.conversation_id);
  if (q.role) s.in(*q.role);
  if (q.from) s.in(*q.from);
  if (q.to) s.in(*q.to);
}

// ============================= context windows =============================

const Sql kWindowPage[2][2] = {
    {{"SELECT " CS_MSG_COLS " FROM messages WHERE conversation_id = :c ORDER BY id DESC LIMIT :n"},
     {"SELECT " CS_MSG_COLS
      " FROM messages WHERE conversation_id = :c AND id < :b ORDER BY id DESC LIMIT :n"}},
    {{"SELECT " CS_MSG_COLS
      " FROM messages WHERE conversation_id = :c AND role <> 'system' ORDER BY id DESC LIMIT :n"},
     {"SELECT " CS_MSG_COLS
      " FROM messages WHERE conversation_id = :c AND role <> 'system' AND id < :b ORDER BY id "
      "DESC LIMIT :n"}},
};

}  // namespace

Page<SearchHit> ConversationStore::search(const SearchQuery& q) {
  check_text(q.text, "search text");
  detail::check_count(q.limit, 1000, "search limit");
  if (q.snippet_words < 2 || q.snippet_words > 64) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("snippet length {} words is outside 2 .. 64", q.snippet_words));
  }
  check_text(q.highlight_open, "highlight marker");
  check_text(q.highlight_close, "highlight marker");
  check_text(q.snippet_ellipsis, "snippet ellipsis");
  detail::check_opt(q.channel, "channel filter");
  if (static_cast<bool>(q.role) &&
      (static_cast<int>(*q.role) < 0 || static_cast<int>(*q.role) > 3)) {
    throw Error(ErrorCode::invalid_argument, "role filter is outside the set");
  }
  auto terms = parse_terms(q.text);
  if (terms.empty()) {
    throw Error(ErrorCode::invalid_argument, fmt::format("search text '{}' has no word", q.text));
  }
  std::optional<std::pair<long long, long long>> after;
  if (!q.cursor.empty()) after = parse_search_cursor(q.cursor);
  const bool pg = impl_->backend() == Backend::postgresql;
  const bool join_conv = q.user_id || q.channel;
  // The text depends only on which filters are set, so each variant is
  // prepared once per connection.
  std::string sql;
  if (pg) {
    // The tsquery is a bound constant in each place (not a CTE or a
    // subquery), so that the planner sees it and picks the GIN index for a
    // rare word and a scan for a word in most messages.
    sql = "SELECT " CS_MSG_COLS
          ", h.score, ts_headline('simple', content, CAST(:q1 AS tsquery), :opts) FROM (SELECT "
          "hid, score FROM (SELECT m.id AS hid, CAST(round(CAST(ts_rank_cd(m.search, CAST(:q2 AS "
          "tsquery), 1) AS double precision) * 1e12) AS bigint) AS score FROM messages m";
    if (join_conv) sql += " JOIN conversations c ON c.id = m.conversation_id";
    sql += " WHERE m.search @@ CAST(:q3 AS tsquery)" + search_filters(q) + ") hits";
    if (after) sql += " WHERE score < :s OR (score = :s2 AND hid > :id)";
    sql += " ORDER BY score DESC, hid LIMIT :n) h JOIN messages ON id = h.hid ";
    sql += "ORDER BY h.score DESC, h.hid";
  } else {
    sql =
        "SELECT h.id, h.score FROM (SELECT rowid AS id, CAST(round(convstore_rank(messages_fts) * "
        "1e12) AS INTEGER) AS score FROM messages_fts WHERE messages_fts MATCH :q) h";
    if (q.conversation_id || q.role || q.from || q.to || join_conv) {
      sql += " JOIN messages m ON m.id = h.id";
    }
    if (join_conv) sql += " JOIN conversations c ON c.id = m.conversation_id";
    sql += " WHERE 1 = 1" + search_filters(q);
    if (after) sql += " AND (h.score < :s OR (h.score = :s2 AND h.id > :id))";
    sql += " ORDER BY h.score DESC, h.id LIMIT :n";
  }
  auto bind_after = [&](Stmt& s) {
    if (after) s.in(after->first).in(after->first).in(after->second);
  };
  std::vector<long long> scores;
  Page<SearchHit> page;
  impl_->snapshot(Op{"search messages"}, [&](Connection& c) {
    if (pg) {
      auto pt = pg_terms(terms);
      std::string opts =
          headline_options(Marks{std::string(kOpenMark), std::string(kCloseMark)}, q);
      // The tsquery, built by PostgreSQL's own parser; empty when no term
      // holds a lexeme it indexes (then nothing matches).
      static const Sql build{"SELECT CAST(" CS_PG_TSQUERY " AS text)"};
      std::optional<std::string> tsquery;
      Stmt(c, build).in(pt.texts).in(pt.prefixes).in(pt.lexemes).out(tsquery).one();
      if (!tsquery || tsquery->empty()) return;
      // Plans made for this query's words (a generic plan knows nothing of
      // them and would scan every message), for the search statement only:
      // the setting is put back after it, so that the rest of a caller's
      // transaction plans as before. (When the statement fails the
      // transaction is aborted, or rolled back to a savepoint, which undoes
      // the setting too.)
      static const Sql current{"SELECT current_setting('plan_cache_mode')"};
      static const Sql set{"SELECT set_config('plan_cache_mode', :v, true)"};
      std::string before;
      std::string ignored;
      Stmt(c, current).out(before).one();
      Stmt(c, set).in("force_custom_plan").out(ignored).one();
      std::vector<std::string> headlines;
      {
        Stmt s(c, sql);
        s.in(*tsquery).in(opts).in(*tsquery).in(*tsquery);
        bind_filters(s, q);
        bind_after(s);
        s.in(q.limit + 1);
        SearchHit hit;
        long long score = 0;
        std::string headline;
        detail::read_row(s, hit.message);
        s.out(score).out(headline);
        while (s.next()) {
          hit.rank = static_cast<double>(score) / kRankScale;
          page.items.push_back(hit);
          headlines.push_back(headline);
          scores.push_back(score);
        }
      }
      Stmt(c, set).in(before).out(ignored).one();
      // Snippets. A content holding the placeholder characters gets a
      // headline of its own, with placeholders it does not hold.
      static const Sql again{
          "SELECT ts_headline('simple', content, CAST(:q AS tsquery), :opts) FROM messages "
          "WHERE id = :id"};
      for (std::size_t i = 0; i < page.items.size(); ++i) {
        auto& hit = page.items[i];
        Marks marks{std::string(kOpenMark), std::string(kCloseMark)};
        if (hit.message.content.find(kOpenMark) != std::string::npos ||
            hit.message.content.find(kCloseMark) != std::string::npos) {
          marks = marks_absent_from(hit.message.content);
          Stmt h(c, again);
          h.in(*tsquery).in(headline_options(marks, q)).in(hit.message.id).out(headlines[i]);
          h.one();
        }
        hit.snippet = pg_snippet(headlines[i], hit.message.content, q, marks);
      }
    } else {
      std::string query = fts5_query(terms);
      std::vector<std::pair<long long, long long>> ids;
      {
        Stmt s(c, sql);
        s.in(query);
        bind_filters(s, q);
        bind_after(s);
        s.in(q.limit + 1);
        long long id = 0, score = 0;
        s.out(id).out(score);
        while (s.next()) ids.emplace_back(id, score);
      }
      // The message and its snippet, for the hits of this page only.
      static const Sql get{"SELECT " CS_MSG_COLS " FROM messages WHERE id = :id"};
      static const Sql snippet{
          "SELECT snippet(messages_fts, 0, :o, :c, :e, :n) FROM messages_fts WHERE "
          "messages_fts MATCH :q AND rowid = :id"};
      for (const auto& [id, score] : ids) {
        Stmt g(c, get);
        g.in(id);
        auto m = fetch_one<Message>(g);
        if (!m) continue;  // cannot happen in one snapshot
        SearchHit hit;
        hit.message = std::move(*m);
        hit.rank = static_cast<double>(score) / kRankScale;
        Stmt sn(c, snippet);
        sn.in(q.highlight_open).in(q.highlight_close).in(q.snippet_ellipsis);
        sn.in(q.snippet_words).in(query).in(id).out(hit.snippet);
        sn.one();
        page.items.push_back(std::move(hit));
        scores.push_back(score);
      }
    }
  });
  if (page.items.size() > q.limit) {
    page.items.pop_back();
    scores.pop_back();
    page.next_cursor = search_cursor(scores.back(), page.items.back().message.id);
  }
  return page;
}

ContextWindow ConversationStore::context_window(ConversationId id, const ContextBudget& budget) {
  if (budget.max_tokens <= 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("token budget {} is not positive", budget.max_tokens));
  }
  if (budget.max_messages && *budget.max_messages == 0) {
    throw Error(ErrorCode::invalid_argument, "max_messages is 0");
  }
  // Totals saturate (and then are over any budget): a caller's estimate
  // may be as large as it likes.
  constexpr std::int64_t kMaxTokens = std::numeric_limits<std::int64_t>::max();
  bool saturated = false;
  auto add = [&saturated](std::int64_t a, std::int64_t b) {
    if (b > kMaxTokens - a) {
      saturated = true;
      return kMaxTokens;
    }
    return a + b;
  };
  // A message's tokens, and whether they were estimated.
  auto cost = [&](const Message& m) -> std::pair<std::int64_t, bool> {
    if (m.token_count) return {*m.token_count, false};
    std::int64_t e = budget.estimate ? budget.estimate(m) : estimate_tokens(m);
    if (e < 0) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("the token estimate of message {} is negative ({})", m.id, e));
    }
    return {e, true};
  };
  static const Sql exists{"SELECT id FROM conversations WHERE id = :id"};
  static const Sql system{"SELECT " CS_MSG_COLS
                          " FROM messages WHERE conversation_id = :c AND role = 'system' "
                          "ORDER BY id"};
  constexpr std::size_t kPage = 100;
  return impl_->snapshot(Op{"read context window", "conversation", id}, [&](Connection& c) {
    long long found = 0;
    if (!Stmt(c, exists).in(id).out(found).one()) {
      throw Error(ErrorCode::not_found, fmt::format("conversation {} not found", id));
    }
    ContextWindow w;
    std::vector<Message> kept;
    if (budget.keep_system) {
      Stmt s(c, system);
      s.in(id);
      kept = fetch_all<Message>(s);
      for (const auto& m : kept) {
        auto [k, estimated] = cost(m);
        w.total_tokens = add(w.total_tokens, k);
        if (estimated) ++w.estimated;
      }
    }
    std::vector<Message> recent;  // newest first
    const auto& pages = kWindowPage[budget.keep_system ? 1 : 0];
    bool done = false;
    while (!done) {
      Stmt s(c, recent.empty() ? pages[0] : pages[1]);
      s.in(id);
      if (!recent.empty()) s.in(recent.back().id);
      s.in(kPage);
      auto rows = fetch_all<Message>(s, kPage);
      for (auto& m : rows) {
        if (budget.max_messages && recent.size() == *budget.max_messages) {
          w.truncated = true;
          done = true;
          break;
        }
        auto [k, estimated] = cost(m);
        // The newest message is always taken; an older one only if it fits.
        if (!recent.empty() && k > budget.max_tokens - w.total_tokens) {
          w.truncated = true;
          done = true;
          break;
        }
        w.total_tokens = add(w.total_tokens, k);
        if (estimated) ++w.estimated;
        recent.push_back(std::move(m));
      }
      if (rows.size() < kPage) done = true;
    }
    w.over_budget = saturated || w.total_tokens > budget.max_tokens;
    // The kept system messages and the window, merged in id order (both are
    // in it already): chronological, a system message in its place.
    std::reverse(recent.begin(), recent.end());
    w.messages.reserve(kept.size() + recent.size());
    std::merge(std::make_move_iterator(kept.begin()), std::make_move_iterator(kept.end()),
               std::make_move_iterator(recent.begin()), std::make_move_iterator(recent.end()),
               std::back_inserter(w.messages),
               [](const Message& a, const Message& b) { return a.id < b.id; });
    return w;
  });
}

}  // namespace convstore
