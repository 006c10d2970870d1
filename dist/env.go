package dist

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Env is a process's place in a distributed run, as launchers describe it
// in the environment (torchrun's names). A plain value: safe to copy and
// to read from several goroutines.
type Env struct {
	// MasterAddr and MasterPort locate the TCPStore (MASTER_ADDR,
	// MASTER_PORT): rank 0's machine, or the launcher's store.
	MasterAddr string
	MasterPort int
	// Rank (RANK), WorldSize (WORLD_SIZE) and LocalRank (LOCAL_RANK, the
	// rank on this machine).
	Rank, WorldSize, LocalRank int
	// AgentStore is set by torchrun (TORCHELASTIC_USE_AGENT_STORE=True):
	// the launcher serves the store and rank 0 connects to it as a client;
	// RestartCount (TORCHELASTIC_RESTART_COUNT) names the attempt's keys.
	AgentStore   bool
	RestartCount int
	// GlooInterface is GLOO_SOCKET_IFNAME: the network interface Gloo
	// uses (else the address the hostname resolves to, or the loopback
	// when MasterAddr is a loopback address).
	GlooInterface string
}

// Distributed reports whether the environment asks for more than one
// process.
func (e Env) Distributed() bool { return e.WorldSize > 1 }

// ReadEnv reads the launcher's environment. Without WORLD_SIZE it returns
// a single-process Env (WorldSize 1); a malformed or missing variable of a
// distributed run is an error naming it.
func ReadEnv() (Env, error) {
	e := Env{WorldSize: 1, MasterAddr: "127.0.0.1", MasterPort: 29500}
	ws := strings.TrimSpace(os.Getenv("WORLD_SIZE"))
	if ws == "" {
		return e, nil
	}
	var err error
	atoi := func(name string, required bool, dst *int) {
		v := strings.TrimSpace(os.Getenv(name))
		if v == "" {
			if required && err == nil {
				err = fmt.Errorf("dist: WORLD_SIZE=%s but %s is not set", ws, name)
			}
			return
		}
		n, perr := strconv.Atoi(v)
		if perr != nil && err == nil {
			err = fmt.Errorf("dist: %s=%q is not an integer", name, v)
		}
		*dst = n
	}
	atoi("WORLD_SIZE", true, &e.WorldSize)
	if err != nil || e.WorldSize <= 1 {
		if e.WorldSize < 1 && err == nil {
			err = fmt.Errorf("dist: WORLD_SIZE=%s: must be at least 1", ws)
		}
		return Env{WorldSize: 1, MasterAddr: e.MasterAddr, MasterPort: e.MasterPort}, err
	}
	atoi("RANK", true, &e.Rank)
	atoi("LOCAL_RANK", false, &e.LocalRank)
	atoi("MASTER_PORT", true, &e.MasterPort)
	atoi("TORCHELASTIC_RESTART_COUNT", false, &e.RestartCount)
	if a := strings.TrimSpace(os.Getenv("MASTER_ADDR")); a != "" {
		e.MasterAddr = a
	} else if err == nil {
		err = fmt.Errorf("dist: WORLD_SIZE=%s but MASTER_ADDR is not set", ws)
	}
	e.AgentStore = strings.EqualFold(strings.TrimSpace(os.Getenv("TORCHELASTIC_USE_AGENT_STORE")), "true")
	e.GlooInterface = strings.TrimSpace(os.Getenv("GLOO_SOCKET_IFNAME"))
	if err != nil {
		return e, err
	}
	return e, e.Validate()
}

// Validate checks the ranks and the port.
func (e Env) Validate() error {
	switch {
	case e.WorldSize < 1:
		return fmt.Errorf("dist: WORLD_SIZE=%d: must be at least 1", e.WorldSize)
	case e.Rank < 0 || e.Rank >= e.WorldSize:
		return fmt.Errorf("dist: RANK=%d is not in 0..%d (WORLD_SIZE=%d)", e.Rank, e.WorldSize-1, e.WorldSize)
	case e.LocalRank < 0:
		return fmt.Errorf("dist: LOCAL_RANK=%d is negative", e.LocalRank)
	case e.MasterPort <= 0 || e.MasterPort > 65535:
		return fmt.Errorf("dist: MASTER_PORT=%d is not a TCP port", e.MasterPort)
	case e.MasterAddr == "":
		return fmt.Errorf("dist: MASTER_ADDR is empty")
	}
	return nil
}

// glooHost is the address Gloo binds to when no interface is named: the
// loopback for a run on loopback (a container's hostname may not resolve),
// else "" (the address the hostname resolves to, as torch does).
func (e Env) glooHost() string {
	if e.GlooInterface != "" {
		return ""
	}
	if e.MasterAddr == "localhost" {
		return "127.0.0.1"
	}
	if ip := net.ParseIP(e.MasterAddr); ip != nil && ip.IsLoopback() {
		return e.MasterAddr
	}
	return ""
}

func timeoutFromEnv() (time.Duration, error) {
	v := strings.TrimSpace(os.Getenv("GOPEFT_DIST_TIMEOUT"))
	if v == "" {
		return DefaultTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("dist: GOPEFT_DIST_TIMEOUT=%q is not a positive duration (e.g. 90s, 30m)", v)
	}
	return d, nil
}

var def struct {
	sync.Mutex
	g *Group
}

// Default is the process-wide group the environment describes, joined on
// the first call with opts (later calls return the same group and ignore
// opts). It returns nil and no error when the environment is not
// distributed (WORLD_SIZE unset or 1). Safe for concurrent use.
func Default(opts Options) (*Group, error) {
	def.Lock()
	defer def.Unlock()
	if def.g != nil {
		return def.g, nil
	}
	env, err := ReadEnv()
	if err != nil {
		return nil, err
	}
	if !env.Distributed() {
		return nil, nil
	}
	g, err := Init(env, opts)
	if err != nil {
		return nil, err
	}
	def.g = g
	return g, nil
}
