package serve

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"

	"github.com/gopeft/peft/peft"
)

// adapterSet knows the adapters the server can serve (name → folder),
// which of them are resident in the model, and how many requests use each.
// At most max are resident: loading one more unloads the least recently
// used adapter that no request is using. An adapter that was unloaded that
// way is loaded again from its folder by the next request that names it.
//
// Safe for concurrent use. Loading and unloading hold the lock, so
// requests wait while an adapter loads.
type adapterSet struct {
	mu       sync.Mutex
	model    *peft.Model
	max      int
	dirs     map[string]string // known adapters
	resident map[string]*residentAdapter
	clock    uint64
	// loadFn and unloadFn change the model (peft.Model.LoadAdapter,
	// DeleteAdapter); tests replace them.
	loadFn   func(dir, name string) error
	unloadFn func(name string) error
}

type residentAdapter struct {
	inUse    int
	lastUsed uint64
	// fixed adapters were in the model before the server was made (no
	// folder to load them from again): never unloaded for the cap.
	fixed bool
}

var errAdaptersBusy = errors.New("every resident adapter is in use")

func newAdapterSet(m *peft.Model, max int) *adapterSet {
	a := &adapterSet{model: m, max: max, dirs: map[string]string{}, resident: map[string]*residentAdapter{}}
	a.loadFn = func(dir, name string) error { return m.LoadAdapter(dir, name) }
	a.unloadFn = m.DeleteAdapter
	for _, name := range m.Adapters() {
		a.resident[name] = &residentAdapter{fixed: true}
	}
	return a
}

// known reports whether name is an adapter the server serves.
func (a *adapterSet) known(name string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.dirs[name]
	_, res := a.resident[name]
	return ok || res
}

// names lists the adapters served, sorted.
func (a *adapterSet) names() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	set := map[string]bool{}
	for n := range a.dirs {
		set[n] = true
	}
	for n := range a.resident {
		set[n] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (a *adapterSet) counts() (resident, known int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	known = len(a.resident)
	for n := range a.dirs {
		if _, ok := a.resident[n]; !ok {
			known++
		}
	}
	return len(a.resident), known
}

// acquire pins name for one request (loading it first when it is known
// but not resident); release unpins it.
func (a *adapterSet) acquire(name string) (release func(), err *apiError) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.resident[name]
	if !ok {
		dir, known := a.dirs[name]
		if !known {
			return nil, notFound(name)
		}
		if err := a.makeRoom(); err != nil {
			return nil, &apiError{status: http.StatusServiceUnavailable, Type: "server_error", Code: strp("adapters_busy"),
				Message: fmt.Sprintf("adapter %q is not loaded and %v (cap %d): retry later", name, err, a.max), retryAfter: 1}
		}
		if err := a.loadFn(dir, name); err != nil {
			return nil, &apiError{status: http.StatusInternalServerError, Type: "server_error", Code: strp("adapter_load_failed"),
				Message: fmt.Sprintf("loading adapter %q from %s: %v", name, dir, err)}
		}
		r = &residentAdapter{}
		a.resident[name] = r
	}
	a.clock++
	r.inUse++
	r.lastUsed = a.clock
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			r.inUse--
			a.mu.Unlock()
		})
	}, nil
}

// makeRoom unloads least recently used idle adapters until one more fits.
// The caller holds mu.
func (a *adapterSet) makeRoom() error {
	for a.max > 0 && len(a.resident) >= a.max {
		victim := ""
		var oldest uint64
		for n, r := range a.resident {
			if r.inUse > 0 || r.fixed {
				continue
			}
			if victim == "" || r.lastUsed < oldest {
				victim, oldest = n, r.lastUsed
			}
		}
		if victim == "" {
			return errAdaptersBusy
		}
		if err := a.unloadFn(victim); err != nil {
			return fmt.Errorf("unloading adapter %q: %w", victim, err)
		}
		delete(a.resident, victim)
	}
	return nil
}

// load registers name → dir and loads it now (replacing nothing: a name
// already served is a 409).
func (a *adapterSet) load(name, dir string) *apiError {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.dirs[name]; ok {
		return &apiError{status: http.StatusConflict, Type: "invalid_request_error", Param: strp("name"), Code: strp("adapter_exists"),
			Message: fmt.Sprintf("adapter %q is already loaded (unload it first)", name)}
	}
	if _, ok := a.resident[name]; ok {
		return &apiError{status: http.StatusConflict, Type: "invalid_request_error", Param: strp("name"), Code: strp("adapter_exists"),
			Message: fmt.Sprintf("adapter %q is already loaded", name)}
	}
	if err := a.makeRoom(); err != nil {
		return &apiError{status: http.StatusServiceUnavailable, Type: "server_error", Code: strp("adapters_busy"),
			Message: fmt.Sprintf("cannot load adapter %q: %v (cap %d)", name, err, a.max), retryAfter: 1}
	}
	if err := a.loadFn(dir, name); err != nil {
		return invalid("path", "adapter_load_failed", "loading adapter %q from %s: %v", name, dir, err)
	}
	a.dirs[name] = dir
	a.clock++
	a.resident[name] = &residentAdapter{lastUsed: a.clock}
	return nil
}

// register makes name → dir known without loading it (the first request
// that names it loads it).
func (a *adapterSet) register(name, dir string) {
	a.mu.Lock()
	a.dirs[name] = dir
	a.mu.Unlock()
}

// unload forgets name and removes it from the model; an adapter that a
// request is using is a 409.
func (a *adapterSet) unload(name string) *apiError {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, known := a.dirs[name]
	r, res := a.resident[name]
	if !known && !res {
		return notFound(name)
	}
	if res {
		if r.inUse > 0 {
			return &apiError{status: http.StatusConflict, Type: "invalid_request_error", Param: strp("name"), Code: strp("adapter_in_use"),
				Message: fmt.Sprintf("adapter %q is in use by %d request(s); retry when they finish", name, r.inUse), retryAfter: 1}
		}
		if err := a.unloadFn(name); err != nil {
			return &apiError{status: http.StatusInternalServerError, Type: "server_error", Code: strp("adapter_unload_failed"),
				Message: fmt.Sprintf("unloading adapter %q: %v", name, err)}
		}
		delete(a.resident, name)
	}
	delete(a.dirs, name)
	return nil
}

func notFound(model string) *apiError {
	return &apiError{status: http.StatusNotFound, Type: "invalid_request_error", Param: strp("model"), Code: strp("model_not_found"),
		Message: fmt.Sprintf("the model %q does not exist (GET /v1/models lists the base model and the adapters)", model)}
}
