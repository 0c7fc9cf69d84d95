// One Atari game's frame-skipped step, compiled: SB3's MaxAndSkipEnv and WarpFrame on ALE's own C++ API.
//
// Built on first use by dqn_cli/native.py against the installed ale-py's _ale_py module (which exports ALE's C++
// classes) and loaded with ctypes, which releases the GIL around every call. Each step plays `frame_skip` frames with
// ALEInterface::act, keeps the raw palette screens of the last two frames (SB3's max-pool buffer), and turns them
// into the 84x84 observation on a worker thread:
//   - the max-pool and grayscale are one lookup per pixel in a 256x256 table that dqn_cli/native.py builds with
//     OpenCV itself from ALE's palette (gray(max(rgb(a), rgb(b))) for every pair of palette indices),
//   - the area resize is OpenCV's ResizeArea_Invoker for uchar/float (computeResizeAreaTab's weights, a float
//     horizontal pass per source row, a float vertical pass, rounded half to even), in the same order of
//     operations, compiled without contraction into FMA, so every pixel is OpenCV's.
// tests/test_native.py checks frames against ale-py + OpenCV, and tests/test_ale_vec.py against SB3's AtariWrapper.

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <stdexcept>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <dlfcn.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace ale {
// Declarations matching ale-py's exported ALE classes (src/ale/ale_interface.hpp, environment/ale_screen.hpp).
enum Action : int { PLAYER_A_NOOP = 0 };

class ALEScreen {
 public:
  const unsigned char* data() const { return m_pixels.data(); }
  int height() const { return m_rows; }
  int width() const { return m_columns; }
  size_t size() const { return m_pixels.size(); }
  unsigned char* mutable_data() const { return const_cast<unsigned char*>(m_pixels.data()); }

 protected:
  int m_rows;
  int m_columns;
  std::vector<unsigned char> m_pixels;
};

class ALEInterface {
 public:
  ALEInterface();
  ~ALEInterface();
  void setInt(const std::string& key, const int value);
  void setBool(const std::string& key, const bool value);
  void setFloat(const std::string& key, const float value);
  void loadROM(std::filesystem::path rom_file);
  int act(Action action, float paddle_strength);
  bool game_over(bool with_truncation) const;
  bool game_truncated() const;
  void reset_game();
  std::vector<Action> getLegalActionSet() const;
  std::vector<Action> getMinimalActionSet() const;
  int getFrameNumber() const;
  int lives();
  int getEpisodeFrameNumber() const;
  const ALEScreen& getScreen() const;
  void getScreenRGB(std::vector<unsigned char>& output_rgb_buffer) const;
};

class Logger {
 public:
  enum mode { Info = 0, Warning = 1, Error = 2 };
  static void setMode(mode m);
};
}  // namespace ale

namespace {

constexpr size_t kInterfaceBytes = 4096;  // ALEInterface is 40 bytes in ale-py 0.10-0.12; room for any layout

struct Tap {
  int src;
  int dst;
  float alpha;
};

// OpenCV's computeResizeAreaTab (imgproc/src/resize.cpp), for one channel.
std::vector<Tap> area_taps(int ssize, int dsize) {
  const double scale = static_cast<double>(ssize) / dsize;
  std::vector<Tap> tab;
  for (int dx = 0; dx < dsize; dx++) {
    double fsx1 = dx * scale;
    double fsx2 = fsx1 + scale;
    double cell = std::min(scale, ssize - fsx1);
    int sx1 = static_cast<int>(std::ceil(fsx1)), sx2 = static_cast<int>(std::floor(fsx2));
    sx2 = std::min(sx2, ssize - 1);
    sx1 = std::min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) tab.push_back({sx1 - 1, dx, static_cast<float>((sx1 - fsx1) / cell)});
    for (int sx = sx1; sx < sx2; sx++) tab.push_back({sx, dx, static_cast<float>(1.0 / cell)});
    if (fsx2 - sx2 > 1e-3) tab.push_back({sx2, dx, static_cast<float>(std::min(std::min(fsx2 - sx2, 1.), cell) / cell)});
  }
  return tab;
}

// The horizontal taps regrouped per destination column: the first source column and up to kTaps weights, in
// the order OpenCV adds them, padded with zero weights (adding 0 * x leaves a float sum unchanged).
constexpr int kTaps = 4;
constexpr int kBlock = 8;  // source rows whose horizontal passes run side by side, one per vector lane
typedef float Lanes __attribute__((vector_size(kBlock * sizeof(float))));
typedef unsigned char Bytes __attribute__((vector_size(kBlock)));

struct Column {
  int first = 0;
  float alpha[kTaps] = {0.0f, 0.0f, 0.0f, 0.0f};
};

std::vector<Column> columns_of(const std::vector<Tap>& tab, int dsize, int* taps) {
  std::vector<Column> columns(dsize);
  std::vector<int> count(dsize, 0);
  *taps = 0;
  for (const Tap& t : tab) {
    Column& c = columns[t.dst];
    if (count[t.dst] == 0) c.first = t.src;
    const int j = t.src - c.first;
    if (j != count[t.dst] || j >= kTaps) throw std::runtime_error("unexpected area-resize taps");
    c.alpha[j] = t.alpha;
    *taps = std::max(*taps, ++count[t.dst]);
  }
  return columns;
}

struct Warp {
  int height = 0, width = 0, size = 0;
  int taps = 0;  // the most taps any destination column has (3 for 160 -> 84)
  std::vector<Column> columns;
  std::vector<Tap> rows;
  std::vector<unsigned char> table;  // 256 x 256: gray(max(rgb(a), rgb(b)))
  std::vector<unsigned char> gray_block;  // width x kBlock: one block's gray pixels, column by column
  std::vector<Lanes> block;               // width + kTaps: the same as floats, a source column per element
  std::vector<float> horizontal;     // height x size: every source row's horizontal pass (OpenCV's `buf`)
  std::vector<float> sum;            // size

  void prepare(int h, int w, int s) {
    height = h, width = w, size = s;
    columns = columns_of(area_taps(w, s), s, &taps);
    rows = area_taps(h, s);
    table.assign(256 * 256, 0);
    gray_block.assign(static_cast<size_t>(w) * kBlock, 0);
    block.assign(static_cast<size_t>(w + kTaps), Lanes{});
    horizontal.assign(static_cast<size_t>(h) * s, 0.0f);
    sum.assign(s, 0.0f);
  }

  // WarpFrame over SB3's max-pool of two raw screens: the table, then OpenCV's INTER_AREA.
  void operator()(const unsigned char* a, const unsigned char* b, unsigned char* out) {
    for (int y0 = 0; y0 < height; y0 += kBlock) horizontal_pass(a, b, y0);
    vertical_pass(out);
  }

  // Rows y0..y0+7 (the last row repeated past the end): gray of the max-pool per pixel, stored column by column
  // (a column's eight rows side by side), then each destination column's taps, eight rows at a time.
  void horizontal_pass(const unsigned char* a, const unsigned char* b, int y0) {
    const unsigned char* tab = table.data();
    unsigned char* gray = gray_block.data();
    for (int r = 0; r < kBlock; r++) {
      const size_t row = static_cast<size_t>(std::min(y0 + r, height - 1)) * width;
      const unsigned char* pa = a + row;
      const unsigned char* pb = b + row;
      for (int x = 0; x < width; x++) gray[x * kBlock + r] = tab[(static_cast<unsigned>(pa[x]) << 8) | pb[x]];
    }
    Lanes* blk = block.data();
    for (int x = 0; x < width; x++) {
      Bytes v;
      std::memcpy(&v, gray + x * kBlock, sizeof(v));
      blk[x] = __builtin_convertvector(v, Lanes);
    }
    const int valid = std::min(kBlock, height - y0);
    float* dst = horizontal.data() + static_cast<size_t>(y0) * size;
    for (int d = 0; d < size; d++) {
      const Column& c = columns[d];
      const Lanes* src = blk + c.first;
      Lanes acc = Lanes{};
      for (int j = 0; j < taps; j++) acc = acc + src[j] * c.alpha[j];
      for (int r = 0; r < valid; r++) dst[static_cast<size_t>(r) * size + d] = acc[r];
    }
  }

  // OpenCV's vertical pass: each destination row sums its source rows' horizontal passes in order.
  void vertical_pass(unsigned char* out) {
    float* __restrict s = sum.data();
    int prev = rows.empty() ? 0 : rows[0].dst;
    for (int d = 0; d < size; d++) s[d] = 0.0f;
    for (const Tap& r : rows) {
      const float* __restrict buf = horizontal.data() + static_cast<size_t>(r.src) * size;
      const float beta = r.alpha;
      if (r.dst != prev) {
        store(s, out + static_cast<size_t>(prev) * size);
        for (int d = 0; d < size; d++) s[d] = beta * buf[d];
        prev = r.dst;
      } else {
        for (int d = 0; d < size; d++) s[d] += beta * buf[d];
      }
    }
    store(s, out + static_cast<size_t>(prev) * size);
  }

  void store(const float* s, unsigned char* out) const {
    for (int d = 0; d < size; d++) {
      int v = static_cast<int>(__builtin_lrintf(s[d]));  // rounded half to even, as cvRound
      out[d] = static_cast<unsigned char>(v < 0 ? 0 : v > 255 ? 255 : v);
    }
  }
};

class Pool;

struct Result {
  int reward = 0;
  int game_over = 0;
  int truncated = 0;
  int lives = 0;
  int frame_number = 0;
  int episode_frame_number = 0;
};

struct Game {
  void* memory = nullptr;
  ale::ALEInterface* ale = nullptr;
  std::string rom;
  Pool* pool = nullptr;
  int frame_skip = 4;
  Warp warp;
  std::vector<ale::Action> actions;
  std::vector<unsigned char> pooled[2];  // SB3's max-pool buffer: raw screens of frames skip-2 and skip-1
  std::vector<unsigned char> frame;      // the warped observation of the latest step
  Result result;
  std::string error;
  int action = 0;
  bool busy = false;
  std::mutex mutex;
  std::condition_variable done;

  void step();
  void finish(Result r);
};

class Pool {
 public:
  explicit Pool(int n) {
    for (int i = 0; i < n; i++) threads_.emplace_back([this] { run(); });
    std::unique_lock<std::mutex> lock(mutex_);
    started_.wait(lock, [&] { return static_cast<int>(tids_.size()) == n; });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    ready_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void submit(Game* g) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(g);
    }
    ready_.notify_one();
  }
  int size() const { return static_cast<int>(threads_.size()); }
  std::vector<int> tids() {
    std::lock_guard<std::mutex> lock(mutex_);
    return tids_;
  }

 private:
  void run() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tids_.push_back(static_cast<int>(syscall(SYS_gettid)));
    }
    started_.notify_all();
    for (;;) {
      Game* g;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;
        g = queue_.front();
        queue_.pop_front();
      }
      g->step();
    }
  }

  std::vector<std::thread> threads_;
  std::vector<int> tids_;
  std::deque<Game*> queue_;
  std::mutex mutex_;
  std::condition_variable ready_, started_;
  bool stop_ = false;
};

Result snapshot(ale::ALEInterface* ale) {
  Result r;
  r.lives = ale->lives();
  r.frame_number = ale->getFrameNumber();
  r.episode_frame_number = ale->getEpisodeFrameNumber();
  return r;
}

// MaxAndSkipEnv.step: `frame_skip` frames of one action; the last two frames' screens go into the max-pool buffer,
// which keeps older screens when the game ends before them (as SB3's does).
void Game::step() {
  Result r;
  try {
    const ale::Action a = actions.at(static_cast<size_t>(action));
    const size_t n = pooled[0].size();
    for (int i = 0; i < frame_skip; i++) {
      r.reward += ale->act(a, 1.0f);
      if (i >= frame_skip - 2) std::memcpy(pooled[i - (frame_skip - 2)].data(), ale->getScreen().data(), n);
      r.game_over = ale->game_over(false);
      r.truncated = ale->game_truncated();
      if (r.game_over || r.truncated) break;
    }
    warp(pooled[0].data(), pooled[1].data(), frame.data());
    Result s = snapshot(ale);
    r.lives = s.lives, r.frame_number = s.frame_number, r.episode_frame_number = s.episode_frame_number;
  } catch (const std::exception& e) {
    error = e.what();
  }
  finish(r);
}

void Game::finish(Result r) {
  {
    std::lock_guard<std::mutex> lock(mutex);
    result = r;
    busy = false;
  }
  done.notify_one();
}

// Calls that touch the emulator from the caller's thread first let a step still on the pool finish.
Game* idle(void* game) {
  auto* g = static_cast<Game*>(game);
  std::unique_lock<std::mutex> lock(g->mutex);
  g->done.wait(lock, [&] { return !g->busy; });
  return g;
}

int fail(Game* g, const std::exception& e) {
  g->error = e.what();
  return -1;
}

// The OpenMP runtime torch has loaded (libgomp): its entry point for a parallel region and the team size a region
// started on the calling thread gets. Empty where torch runs on another runtime, or has not been loaded yet (looked
// for again at the next call).
struct OpenMP {
  using Region = void (*)(void (*)(void*), void*, unsigned, unsigned);
  Region region = nullptr;
  int (*max_threads)() = nullptr;
};

OpenMP torch_openmp() {
  static std::atomic<bool> found{false};
  static OpenMP openmp;
  if (found.load()) return openmp;
  OpenMP o;
  if (void* gomp = dlopen("libgomp.so.1", RTLD_LAZY | RTLD_NOLOAD)) {
    o.region = reinterpret_cast<OpenMP::Region>(dlsym(gomp, "GOMP_parallel"));
    o.max_threads = reinterpret_cast<int (*)()>(dlsym(gomp, "omp_get_max_threads"));
    dlclose(gomp);  // the runtime stays loaded: torch holds it
  }
  if (o.region == nullptr || o.max_threads == nullptr) return OpenMP();
  static std::mutex setting;
  std::lock_guard<std::mutex> lock(setting);
  openmp = o;
  found.store(true);
  return o;
}

struct TeamSteps {
  Game** games;
  int n;
  std::atomic<int> next{0};
};

// Each member of the team takes the next game not yet taken until none is left.
void team_steps(void* work) {
  auto* w = static_cast<TeamSteps*>(work);
  for (int i = w->next.fetch_add(1); i < w->n; i = w->next.fetch_add(1)) w->games[i]->step();
}

}  // namespace

extern "C" {

int dqn_abi_version() { return 3; }

void* dqn_pool_new(int threads) {
  ale::Logger::setMode(ale::Logger::Error);
  return new Pool(threads);
}

int dqn_pool_thread_ids(void* pool, int* out, int capacity) {
  std::vector<int> tids = static_cast<Pool*>(pool)->tids();
  int n = std::min<int>(capacity, static_cast<int>(tids.size()));
  for (int i = 0; i < n; i++) out[i] = tids[i];
  return static_cast<int>(tids.size());
}

void dqn_pool_free(void* pool) { delete static_cast<Pool*>(pool); }

// A game on `pool`, its ROM loaded with `seed` (ALE's random_seed) and sticky-action probability `sticky`.
void* dqn_game_new(void* pool, const char* rom, int seed, float sticky, int full_action_space, int frame_skip,
                   int size, int max_frames) {
  auto* g = new Game();
  try {
    ale::Logger::setMode(ale::Logger::Error);
    g->memory = ::operator new(kInterfaceBytes);
    std::memset(g->memory, 0, kInterfaceBytes);
    g->ale = new (g->memory) ale::ALEInterface();
    g->rom = rom;
    g->pool = static_cast<Pool*>(pool);
    g->frame_skip = frame_skip;
    g->ale->setFloat("repeat_action_probability", sticky);
    if (max_frames > 0) g->ale->setInt("max_num_frames_per_episode", max_frames);
    g->ale->setInt("random_seed", seed);
    g->ale->loadROM(std::filesystem::path(g->rom));
    g->actions = full_action_space ? g->ale->getLegalActionSet() : g->ale->getMinimalActionSet();
    const ale::ALEScreen& screen = g->ale->getScreen();
    if (screen.size() != static_cast<size_t>(screen.height()) * screen.width() || screen.height() <= 0)
      throw std::runtime_error("ALE's screen is not laid out as this build expects");
    g->warp.prepare(screen.height(), screen.width(), size);
    for (auto& p : g->pooled) p.assign(screen.size(), 0);  // SB3's buffer starts as zeros: palette 0 is black
    g->frame.assign(static_cast<size_t>(size) * size, 0);
  } catch (const std::exception& e) {
    g->error = e.what();
  }
  return g;
}

const char* dqn_game_error(void* game) { return static_cast<Game*>(game)->error.c_str(); }

void dqn_game_free(void* game) {
  Game* g = idle(game);  // a step still on the pool (an interrupted caller) ends first
  if (g->ale != nullptr) g->ale->~ALEInterface();
  ::operator delete(g->memory);
  delete g;
}

int dqn_game_actions(void* game, int* out, int capacity) {
  auto* g = static_cast<Game*>(game);
  int n = std::min<int>(capacity, static_cast<int>(g->actions.size()));
  for (int i = 0; i < n; i++) out[i] = static_cast<int>(g->actions[i]);
  return static_cast<int>(g->actions.size());
}

// ALE's palette as RGB for all 256 indices (written into the screen, converted by ALE, the screen put back).
int dqn_game_palette(void* game, unsigned char* out) {
  Game* g = idle(game);
  try {
    const ale::ALEScreen& screen = g->ale->getScreen();
    std::vector<unsigned char> saved(screen.data(), screen.data() + screen.size());
    for (int i = 0; i < 256; i++) screen.mutable_data()[i] = static_cast<unsigned char>(i);
    std::vector<unsigned char> rgb(screen.size() * 3);
    g->ale->getScreenRGB(rgb);
    std::memcpy(screen.mutable_data(), saved.data(), saved.size());
    std::memcpy(out, rgb.data(), 256 * 3);
    return 0;
  } catch (const std::exception& e) {
    return fail(g, e);
  }
}

void dqn_game_set_table(void* game, const unsigned char* table) {
  auto* g = static_cast<Game*>(game);
  std::memcpy(g->warp.table.data(), table, 256 * 256);
}

// The raw palette screen (tests compare it with ale-py's getScreen).
void dqn_game_screen(void* game, unsigned char* out) {
  Game* g = idle(game);
  const ale::ALEScreen& screen = g->ale->getScreen();
  std::memcpy(out, screen.data(), screen.size());
}

// SB3's AtariEnv.reset(seed=...): ALE's random_seed, then the ROM again.
int dqn_game_seed(void* game, int seed) {
  Game* g = idle(game);
  try {
    g->ale->setInt("random_seed", seed);
    g->ale->loadROM(std::filesystem::path(g->rom));
    return 0;
  } catch (const std::exception& e) {
    return fail(g, e);
  }
}

// NoopResetEnv.reset: a new game, then `noops` single-frame no-ops (a new game again wherever one ends); the
// observation is the last frame's screen, not max-pooled. Returns lives, frame numbers through `info`.
int dqn_game_reset(void* game, int noops, unsigned char* out, int* info) {
  Game* g = idle(game);
  try {
    g->ale->reset_game();
    for (int i = 0; i < noops; i++) {
      g->ale->act(ale::PLAYER_A_NOOP, 1.0f);
      if (g->ale->game_over(false) || g->ale->game_truncated()) g->ale->reset_game();
    }
    const unsigned char* screen = g->ale->getScreen().data();
    g->warp(screen, screen, out);
    Result s = snapshot(g->ale);
    info[0] = s.lives, info[1] = s.frame_number, info[2] = s.episode_frame_number;
    return 0;
  } catch (const std::exception& e) {
    return fail(g, e);
  }
}

// MaxAndSkipEnv.step, started on the pool: `dqn_game_recv` waits for it.
void dqn_game_send(void* game, int action) {
  auto* g = static_cast<Game*>(game);
  {
    std::unique_lock<std::mutex> lock(g->mutex);
    g->done.wait(lock, [&] { return !g->busy; });  // a second send without a recv waits for the first step
    g->busy = true;
    g->action = action;
  }
  g->pool->submit(g);
}

// The step's observation into `out`; reward, game over, truncated, lives and frame numbers into `info`. -1 on an
// error.
int dqn_game_recv(void* game, unsigned char* out, int* info) {
  auto* g = static_cast<Game*>(game);
  std::unique_lock<std::mutex> lock(g->mutex);
  g->done.wait(lock, [&] { return !g->busy; });
  if (!g->error.empty()) return -1;
  std::memcpy(out, g->frame.data(), g->frame.size());
  const Result& r = g->result;
  info[0] = r.reward, info[1] = r.game_over, info[2] = r.truncated, info[3] = r.lives;
  info[4] = r.frame_number, info[5] = r.episode_frame_number;
  return 0;
}

// The steps of `n` games received at once, each into its frame stack (VecFrameStack's update): game i's stack of
// `depth` frames, at stacks + rows[i] * depth * its frame size, moves up by one frame and takes the step's frame
// last; reward, game over, truncated, lives and frame numbers go into info[6 * i] onwards. 0, or -1 - i for the
// first game whose step failed (its error says why).
int dqn_games_recv_stacked(void** games, int n, unsigned char* stacks, const long long* rows, int depth, int* info) {
  for (int i = 0; i < n; i++) {
    const size_t size = static_cast<Game*>(games[i])->frame.size();
    unsigned char* stack = stacks + static_cast<size_t>(rows[i]) * depth * size;
    std::memmove(stack, stack + size, (depth - 1) * size);
    if (dqn_game_recv(games[i], stack + (depth - 1) * size, info + 6 * static_cast<size_t>(i)) != 0) return -1 - i;
  }
  return 0;
}

// The steps of `n` games of `pool`, each with its action, played before returning by the calling thread's OpenMP
// team (torch's threads: the caller and the workers that spin after torch's last parallel region) instead of the
// pool's threads, which would compete with those for the cores. 1 when played so; 0, with nothing done, where there
// is no such team or it has fewer threads than the pool: the caller then sends the steps to the pool.
int dqn_games_step_team(void* pool, void** games, const int* actions, int n) {
  const OpenMP openmp = torch_openmp();
  if (openmp.region == nullptr || openmp.max_threads() < static_cast<Pool*>(pool)->size()) return 0;
  std::vector<Game*> team_games(static_cast<size_t>(n));
  for (int i = 0; i < n; i++) {
    Game* g = team_games[i] = static_cast<Game*>(games[i]);
    std::unique_lock<std::mutex> lock(g->mutex);
    g->done.wait(lock, [&] { return !g->busy; });  // a step sent to the pool and not received yet ends first
    g->busy = true;
    g->action = actions[i];
  }
  TeamSteps work{team_games.data(), n};
  openmp.region(team_steps, &work, 0, 0);
  return 1;
}

}  // extern "C"
