// cnidriver drives CNI plugins through libcni the way a container runtime
// (Multus, containerd) does, so the netns tests exercise the plugins through a
// real client rather than a hand-rolled one.
//
// Usage:
//
//	cnidriver <add|check|del|gc|status> --conflist FILE [--netns PATH]
//	    [--ifname NAME] [--container-id ID] [--args "K=V;K2=V2"]
//	    [--capability-args JSON] [--cache-dir DIR] [--valid-attachments JSON]
//
// --capability-args is libcni's RuntimeConf.CapabilityArgs (e.g. {"ips":["10.0.0.5/24"]}):
// each plugin that declares a capability in its "capabilities" gets that key in its
// "runtimeConfig", as from Multus or podman.
//
// CNI_PATH is taken from the environment. On success add prints the result
// JSON; every failure prints a CNI error object on stdout and exits 1.
//
// Built offline in GOPATH mode against Debian's libcni 1.1.2, which predates
// CNI 1.1: it cannot parse a 1.1.0 result and has no GC or STATUS. Those are
// reimplemented here with libcni's own invoke package, following libcni 1.2:
// GC and STATUS as its GCNetworkList and GetStatusNetworkList, and ADD, CHECK
// and DEL of a 1.1.0 list as its chained calls with the result passed on raw
// and cached as a file.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// A hung plugin must fail the test, not stall the whole run: libcni kills the
// plugin when this context expires.
const pluginTimeout = 60 * time.Second

// attachment mirrors libcni 1.2's types.GCAttachment, absent from 1.1.2.
type attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

type options struct {
	conflist         string
	netns            string
	ifname           string
	containerID      string
	args             string
	capabilityArgs   string
	cacheDir         string
	validAttachments string
}

func main() {
	if err := mainErr(); err != nil {
		fail(err)
	}
}

func mainErr() error {
	if len(os.Args) < 2 {
		return errors.New("usage: cnidriver <add|check|del|gc|status> --conflist FILE [flags]")
	}
	opts, err := parseFlags(os.Args[2:])
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), pluginTimeout)
	defer cancel()
	return run(ctx, os.Args[1], opts)
}

func parseFlags(argv []string) (*options, error) {
	opts := &options{}
	// ContinueOnError: a bad flag is reported as CNI error JSON like any other
	// failure (flag's usage text goes to stderr).
	fs := flag.NewFlagSet("cnidriver", flag.ContinueOnError)
	fs.StringVar(&opts.conflist, "conflist", "", "network configuration list file")
	fs.StringVar(&opts.netns, "netns", "", "path of the container network namespace")
	fs.StringVar(&opts.ifname, "ifname", "eth0", "interface name inside the container")
	fs.StringVar(&opts.containerID, "container-id", "cnidriver", "container id")
	fs.StringVar(&opts.args, "args", "", "CNI_ARGS as K=V;K2=V2")
	fs.StringVar(&opts.capabilityArgs, "capability-args", "{}", "capability arguments (runtimeConfig) as a JSON object")
	fs.StringVar(&opts.cacheDir, "cache-dir", "", "libcni result cache directory")
	fs.StringVar(&opts.validAttachments, "valid-attachments", "[]", `GC: JSON array of {"containerID":..,"ifname":..}`)
	if err := fs.Parse(argv); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if opts.conflist == "" {
		return nil, errors.New("--conflist is required")
	}
	return opts, nil
}

func run(ctx context.Context, command string, opts *options) error {
	list, err := libcni.ConfListFromFile(opts.conflist)
	if err != nil {
		return err
	}
	cniPath := os.Getenv("CNI_PATH")
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(cniPath), opts.cacheDir, nil)

	switch command {
	case "add", "check", "del":
		rt, err := runtimeConf(opts)
		if err != nil {
			return err
		}
		if !libcniKnows(list.CNIVersion) {
			return runRaw(ctx, list, cniPath, command, rt, opts.cacheDir)
		}
		switch command {
		case "add":
			result, err := cni.AddNetworkList(ctx, list, rt)
			if err != nil {
				return err
			}
			return result.PrintTo(os.Stdout)
		case "check":
			return cni.CheckNetworkList(ctx, list, rt)
		default:
			return cni.DelNetworkList(ctx, list, rt)
		}
	case "gc":
		var valid []attachment
		if err := json.Unmarshal([]byte(opts.validAttachments), &valid); err != nil {
			return fmt.Errorf("--valid-attachments: %w", err)
		}
		if valid == nil {
			// InjectConf rejects nil values, and plugins expect an array.
			valid = []attachment{}
		}
		return eachPlugin(ctx, list, cniPath, "GC", map[string]interface{}{
			// libcni 1.2 sends both names: the second is the pre-1.1 draft's.
			"cni.dev/valid-attachments": valid,
			"cni.dev/attachments":       valid,
		})
	case "status":
		return eachPlugin(ctx, list, cniPath, "STATUS", nil)
	default:
		return fmt.Errorf("unknown command %q (want add, check, del, gc or status)", command)
	}
}

func runtimeConf(opts *options) (*libcni.RuntimeConf, error) {
	args, err := splitArgs(opts.args)
	if err != nil {
		return nil, err
	}
	var capabilityArgs map[string]interface{}
	if err := json.Unmarshal([]byte(opts.capabilityArgs), &capabilityArgs); err != nil {
		return nil, fmt.Errorf("--capability-args: %w", err)
	}
	return &libcni.RuntimeConf{
		ContainerID:    opts.containerID,
		NetNS:          opts.netns,
		IfName:         opts.ifname,
		Args:           args,
		CapabilityArgs: capabilityArgs,
	}, nil
}

func libcniKnows(cniVersion string) bool {
	for _, v := range version.All.SupportedVersions() {
		if v == cniVersion {
			return true
		}
	}
	return false
}

// runRaw chains ADD, CHECK or DEL through the list's plugins the way libcni
// does (DEL in reverse order, each plugin's stdin its own config plus the
// list's name and cniVersion and the previous result), without parsing the
// result: the one ADD returned is kept in the cache dir for CHECK and DEL.
func runRaw(ctx context.Context, list *libcni.NetworkConfigList, cniPath, command string, rt *libcni.RuntimeConf, cacheDir string) error {
	cacheFile := filepath.Join(cacheDir, fmt.Sprintf("raw-%s-%s-%s.json", list.Name, rt.ContainerID, rt.IfName))
	var prev json.RawMessage
	if command != "add" {
		cached, err := os.ReadFile(cacheFile)
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		prev = cached
	}
	plugins := list.Plugins
	if command == "del" {
		plugins = make([]*libcni.NetworkConfig, len(list.Plugins))
		for i, p := range list.Plugins {
			plugins[len(list.Plugins)-1-i] = p
		}
	}
	args := &invoke.Args{
		Command:     strings.ToUpper(command),
		ContainerID: rt.ContainerID,
		NetNS:       rt.NetNS,
		PluginArgs:  rt.Args,
		IfName:      rt.IfName,
		Path:        cniPath,
	}
	for _, plugin := range plugins {
		inject := map[string]interface{}{"name": list.Name, "cniVersion": list.CNIVersion}
		if len(prev) > 0 {
			inject["prevResult"] = prev
		}
		// As libcni: the runtime's capability arguments that this plugin declares.
		runtimeConfig := map[string]interface{}{}
		for capability, supported := range plugin.Network.Capabilities {
			if value, given := rt.CapabilityArgs[capability]; supported && given {
				runtimeConfig[capability] = value
			}
		}
		if len(runtimeConfig) > 0 {
			inject["runtimeConfig"] = runtimeConfig
		}
		out, err := execRaw(ctx, plugin, cniPath, args, inject)
		if err != nil {
			return err
		}
		if command == "add" {
			prev = out
		}
	}
	switch command {
	case "add":
		if err := os.MkdirAll(cacheDir, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(cacheFile, prev, 0o600); err != nil {
			return err
		}
		_, err := os.Stdout.Write(prev)
		return err
	case "del":
		if err := os.Remove(cacheFile); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return nil
}

// execRaw runs one plugin of a list with extra keys injected into its config
// and returns its stdout unparsed.
func execRaw(ctx context.Context, plugin *libcni.NetworkConfig, cniPath string, args *invoke.Args, inject map[string]interface{}) ([]byte, error) {
	pluginPath, err := invoke.FindInPath(plugin.Network.Type, filepath.SplitList(cniPath))
	if err != nil {
		return nil, err
	}
	conf, err := libcni.InjectConf(plugin, inject)
	if err != nil {
		return nil, err
	}
	exec := &invoke.RawExec{Stderr: os.Stderr}
	out, err := exec.ExecPlugin(ctx, pluginPath, conf.Bytes, args.AsEnv())
	if err != nil {
		return nil, fmt.Errorf("plugin type=%q failed (%s): %w", plugin.Network.Type, strings.ToLower(args.Command), err)
	}
	return out, nil
}

// splitArgs turns "K=V;K2=V2" into the pairs libcni joins back into CNI_ARGS.
func splitArgs(s string) ([][2]string, error) {
	var pairs [][2]string
	for _, item := range strings.Split(s, ";") {
		if item == "" {
			continue
		}
		kv := strings.SplitN(item, "=", 2)
		if len(kv) != 2 {
			return nil, fmt.Errorf("--args: %q is not K=V", item)
		}
		pairs = append(pairs, [2]string{kv[0], kv[1]})
	}
	return pairs, nil
}

// eachPlugin runs a list-wide command (GC, STATUS) on every plugin of the list
// in order, as libcni 1.2 does: stdin is the plugin's own config with the
// list's name and cniVersion plus extra keys; no container is involved.
func eachPlugin(ctx context.Context, list *libcni.NetworkConfigList, cniPath, command string, extra map[string]interface{}) error {
	args := &invoke.Args{Command: command, Path: cniPath}
	for _, plugin := range list.Plugins {
		inject := map[string]interface{}{"name": list.Name, "cniVersion": list.CNIVersion}
		for k, v := range extra {
			inject[k] = v
		}
		if _, err := execRaw(ctx, plugin, cniPath, args, inject); err != nil {
			return err
		}
	}
	return nil
}

// fail reports err the way a plugin would: a CNI error object on stdout. A
// plugin's own error is passed through with its code; anything else (config,
// flags, exec failure) gets code 0, which no plugin uses.
func fail(err error) {
	var cniErr *types.Error
	if !errors.As(err, &cniErr) {
		cniErr = &types.Error{Code: 0, Msg: err.Error()}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false) // keep messages such as "<missing>" readable
	_ = enc.Encode(cniErr)
	os.Exit(1)
}
