// A small strict JSON reader (RFC 8259) for manifest.json: no third-party dependency.
// Internal to the library. Limits: nesting depth 64, documents up to 64 MiB.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace psd {
namespace capi {

class Json {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  // Parses `text`; on failure returns false and sets `error` ("line L, column C: what").
  static bool Parse(const std::string& text, Json* out, std::string* error);

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_bool() const { return type_ == Type::kBool; }
  bool is_number() const { return type_ == Type::kNumber; }
  bool is_string() const { return type_ == Type::kString; }
  bool is_array() const { return type_ == Type::kArray; }
  bool is_object() const { return type_ == Type::kObject; }

  bool boolean() const { return bool_; }
  double number() const { return number_; }
  const std::string& str() const { return string_; }
  const std::vector<Json>& items() const { return array_; }
  const std::map<std::string, Json>& members() const { return object_; }

  // Member of an object, or nullptr (also when this is not an object).
  const Json* Get(const std::string& key) const;
  // Python-like truthiness (None/False/0/""/[]/{} are false).
  bool Truthy() const;

 private:
  friend class JsonParser;
  Type type_ = Type::kNull;
  bool bool_ = false;
  double number_ = 0.0;
  std::string string_;
  std::vector<Json> array_;
  std::map<std::string, Json> object_;
};

}  // namespace capi
}  // namespace psd
