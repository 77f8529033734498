// Recursive-descent JSON reader (see json.h). Strict (no comments, no trailing commas), except
// that NaN/Infinity/-Infinity are read as Python's json module does.
#include "json.h"

#include <cstdlib>
#include <cstring>
#include <limits>

namespace psd {
namespace capi {

class JsonParser {
 public:
  explicit JsonParser(const std::string& s) : s_(s) {}

  bool Document(Json* out, std::string* error) {
    Ws();
    if (!Value(out, 0)) return Report(error);
    Ws();
    if (i_ != s_.size()) {
      err_ = "unexpected text after the JSON value";
      return Report(error);
    }
    return true;
  }

 private:
  static constexpr int kMaxDepth = 64;

  bool Report(std::string* error) {
    size_t line = 1, col = 1;
    for (size_t k = 0; k < i_ && k < s_.size(); ++k) {
      if (s_[k] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    *error = "line " + std::to_string(line) + ", column " + std::to_string(col) + ": " + err_;
    return false;
  }
  bool Fail(const char* what) {
    err_ = what;
    return false;
  }
  void Ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool Literal(const char* word) {
    const size_t n = std::strlen(word);
    if (s_.compare(i_, n, word) != 0) return Fail("invalid literal");
    i_ += n;
    return true;
  }

  bool Value(Json* v, int depth) {
    if (depth > kMaxDepth) return Fail("nesting deeper than 64 levels");
    if (i_ >= s_.size()) return Fail("unexpected end of document");
    const char c = s_[i_];
    if (c == '{') return Object(v, depth);
    if (c == '[') return Array(v, depth);
    if (c == '"') {
      v->type_ = Json::Type::kString;
      return String(&v->string_);
    }
    if (c == 't' || c == 'f') {
      v->type_ = Json::Type::kBool;
      v->bool_ = c == 't';
      return Literal(c == 't' ? "true" : "false");
    }
    if (c == 'n') {
      v->type_ = Json::Type::kNull;
      return Literal("null");
    }
    // NaN / Infinity: not JSON, but Python's json.dumps writes them (allow_nan) and json.loads
    // reads them, so the manifests Python accepts are accepted here too
    if (c == 'N' || c == 'I' || (c == '-' && i_ + 1 < s_.size() && s_[i_ + 1] == 'I')) {
      v->type_ = Json::Type::kNumber;
      const bool neg = c == '-';
      if (neg) ++i_;
      if (s_[i_] == 'N') {
        v->number_ = std::numeric_limits<double>::quiet_NaN();
        return Literal("NaN");
      }
      v->number_ = neg ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
      return Literal("Infinity");
    }
    if (c == '-' || (c >= '0' && c <= '9')) return Number(v);
    return Fail("expected a JSON value");
  }

  bool Number(Json* v) {
    const size_t start = i_;
    auto digit = [&](size_t k) { return k < s_.size() && s_[k] >= '0' && s_[k] <= '9'; };
    if (s_[i_] == '-') ++i_;
    if (!digit(i_)) return Fail("invalid number");
    if (s_[i_] == '0') {
      ++i_;
    } else {
      while (digit(i_)) ++i_;
    }
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (!digit(i_)) return Fail("invalid number");
      while (digit(i_)) ++i_;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (!digit(i_)) return Fail("invalid number");
      while (digit(i_)) ++i_;
    }
    const std::string tok = s_.substr(start, i_ - start);
    v->type_ = Json::Type::kNumber;
    v->number_ = std::strtod(tok.c_str(), nullptr);
    return true;
  }

  static void Utf8(unsigned cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  bool Hex4(unsigned* cp) {
    if (i_ + 4 > s_.size()) return Fail("truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[i_ + k];
      v <<= 4;
      if (h >= '0' && h <= '9') v |= unsigned(h - '0');
      else if (h >= 'a' && h <= 'f') v |= unsigned(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F') v |= unsigned(h - 'A' + 10);
      else return Fail("invalid \\u escape");
    }
    i_ += 4;
    *cp = v;
    return true;
  }

  bool String(std::string* out) {
    ++i_;  // opening quote
    out->clear();
    while (true) {
      if (i_ >= s_.size()) return Fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return Fail("control character in string");
      if (c != '\\') {
        out->push_back(static_cast<char>(c));
        ++i_;
        continue;
      }
      ++i_;
      if (i_ >= s_.size()) return Fail("unterminated string");
      const char e = s_[i_++];
      switch (e) {
        case '"': out->push_back('"'); break;
        case '\\': out->push_back('\\'); break;
        case '/': out->push_back('/'); break;
        case 'b': out->push_back('\b'); break;
        case 'f': out->push_back('\f'); break;
        case 'n': out->push_back('\n'); break;
        case 'r': out->push_back('\r'); break;
        case 't': out->push_back('\t'); break;
        case 'u': {
          unsigned cp;
          if (!Hex4(&cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00) {  // high surrogate: needs its low half
            unsigned lo;
            if (i_ + 2 > s_.size() || s_[i_] != '\\' || s_[i_ + 1] != 'u')
              return Fail("unpaired surrogate in \\u escape");
            i_ += 2;
            if (!Hex4(&lo)) return false;
            if (lo < 0xDC00 || lo > 0xDFFF) return Fail("unpaired surrogate in \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return Fail("unpaired surrogate in \\u escape");
          }
          Utf8(cp, out);
          break;
        }
        default: return Fail("invalid escape in string");
      }
    }
  }

  bool Array(Json* v, int depth) {
    ++i_;
    v->type_ = Json::Type::kArray;
    Ws();
    if (i_ < s_.size() && s_[i_] == ']') {
      ++i_;
      return true;
    }
    while (true) {
      Ws();
      v->array_.emplace_back();
      if (!Value(&v->array_.back(), depth + 1)) return false;
      Ws();
      if (i_ >= s_.size()) return Fail("unterminated array");
      if (s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (s_[i_] == ']') {
        ++i_;
        return true;
      }
      return Fail("expected ',' or ']' in array");
    }
  }

  bool Object(Json* v, int depth) {
    ++i_;
    v->type_ = Json::Type::kObject;
    Ws();
    if (i_ < s_.size() && s_[i_] == '}') {
      ++i_;
      return true;
    }
    while (true) {
      Ws();
      if (i_ >= s_.size() || s_[i_] != '"') return Fail("expected a string key in object");
      std::string key;
      if (!String(&key)) return false;
      Ws();
      if (i_ >= s_.size() || s_[i_] != ':') return Fail("expected ':' after object key");
      ++i_;
      Ws();
      Json child;
      if (!Value(&child, depth + 1)) return false;
      v->object_[key] = std::move(child);  // duplicate keys: the last one wins (as in Python)
      Ws();
      if (i_ >= s_.size()) return Fail("unterminated object");
      if (s_[i_] == ',') {
        ++i_;
        continue;
      }
      if (s_[i_] == '}') {
        ++i_;
        return true;
      }
      return Fail("expected ',' or '}' in object");
    }
  }

  const std::string& s_;
  size_t i_ = 0;
  std::string err_;
};

bool Json::Parse(const std::string& text, Json* out, std::string* error) {
  *out = Json();
  JsonParser p(text);
  return p.Document(out, error);
}

const Json* Json::Get(const std::string& key) const {
  if (type_ != Type::kObject) return nullptr;
  auto it = object_.find(key);
  return it == object_.end() ? nullptr : &it->second;
}

bool Json::Truthy() const {
  switch (type_) {
    case Type::kNull: return false;
    case Type::kBool: return bool_;
    case Type::kNumber: return number_ != 0.0;
    case Type::kString: return !string_.empty();
    case Type::kArray: return !array_.empty();
    case Type::kObject: return !object_.empty();
  }
  return false;
}

}  // namespace capi
}  // namespace psd
