// A small JSON reader for the model config Triton hands a backend (TRITONSERVER_Message
// serialized to JSON). Objects, arrays, strings (with \uXXXX escapes kept as '?'),
// numbers, true/false/null; a malformed text throws std::runtime_error naming the offset.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace recdeploy {

struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool boolean = false;
  double number = 0.0;
  std::string text;
  std::vector<Json> items;
  std::map<std::string, Json> members;

  // members["key"], or a Null value when absent (so lookups chain)
  const Json& operator[](const std::string& key) const {
    static const Json missing;
    auto found = members.find(key);
    return found == members.end() ? missing : found->second;
  }
  std::string str(const std::string& fallback = "") const {
    return kind == String ? text : fallback;
  }
  // Triton serializes int64 fields (max_batch_size, dims) as strings or numbers
  long long integer(long long fallback = 0) const {
    if (kind == Number) return static_cast<long long>(number);
    if (kind == String && !text.empty()) return std::stoll(text);
    return fallback;
  }
};

class JsonReader {
 public:
  explicit JsonReader(const std::string& text) : s_(text) {}

  Json parse() {
    Json value = read_value();
    skip_space();
    if (pos_ != s_.size()) fail("trailing characters");
    return value;
  }

 private:
  const std::string& s_;
  size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("model config JSON: " + what + " at offset " + std::to_string(pos_));
  }
  void skip_space() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\t' ||
                                s_[pos_] == '\r'))
      ++pos_;
  }
  char peek() {
    skip_space();
    if (pos_ >= s_.size()) fail("unexpected end");
    return s_[pos_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++pos_;
  }
  bool consume_word(const char* word) {
    size_t n = std::char_traits<char>::length(word);
    if (s_.compare(pos_, n, word) != 0) return false;
    pos_ += n;
    return true;
  }

  Json read_value() {
    Json value;
    char c = peek();
    if (c == '{') {
      value.kind = Json::Object;
      ++pos_;
      if (peek() == '}') { ++pos_; return value; }
      while (true) {
        std::string key = read_string();
        expect(':');
        value.members[key] = read_value();
        if (peek() == ',') { ++pos_; continue; }
        expect('}');
        return value;
      }
    }
    if (c == '[') {
      value.kind = Json::Array;
      ++pos_;
      if (peek() == ']') { ++pos_; return value; }
      while (true) {
        value.items.push_back(read_value());
        if (peek() == ',') { ++pos_; continue; }
        expect(']');
        return value;
      }
    }
    if (c == '"') {
      value.kind = Json::String;
      value.text = read_string();
      return value;
    }
    if (consume_word("true")) { value.kind = Json::Bool; value.boolean = true; return value; }
    if (consume_word("false")) { value.kind = Json::Bool; return value; }
    if (consume_word("null")) return value;
    size_t start = pos_;
    while (pos_ < s_.size() && std::string("+-0123456789.eE").find(s_[pos_]) != std::string::npos)
      ++pos_;
    if (start == pos_) fail("unexpected character");
    value.kind = Json::Number;
    value.number = std::stod(s_.substr(start, pos_ - start));
    return value;
  }

  std::string read_string() {
    expect('"');
    std::string out;
    while (pos_ < s_.size() && s_[pos_] != '"') {
      char c = s_[pos_++];
      if (c != '\\') { out += c; continue; }
      if (pos_ >= s_.size()) break;
      char e = s_[pos_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': out += '?'; pos_ += 4; break;
        default: out += e;
      }
    }
    if (pos_ >= s_.size()) fail("unterminated string");
    ++pos_;
    return out;
  }
};

}  // namespace recdeploy
