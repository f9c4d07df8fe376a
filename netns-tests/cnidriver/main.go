// cnidriver drives CNI plugins through libcni the way a container runtime
// (Multus, containerd) does, so the netns tests exercise the plugins through a
// real client rather than a hand-rolled one.
//
// Usage:
//
//	cnidriver <add|check|del|gc|status> --conflist FILE [--netns PATH]
//	    [--ifname NAME] [--container-id ID] [--args "K=V;K2=V2"]
//	    [--cache-dir DIR] [--valid-attachments JSON]
//
// CNI_PATH is taken from the environment. On success add prints the result
// JSON; every failure prints a CNI error object on stdout and exits 1.
//
// Built offline in GOPATH mode against Debian's libcni 1.1.2, which predates
// GC and STATUS (CNI 1.1); those two are reimplemented here following
// libcni 1.2's GCNetworkList and GetStatusNetworkList.
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
	return &libcni.RuntimeConf{
		ContainerID: opts.containerID,
		NetNS:       opts.netns,
		IfName:      opts.ifname,
		Args:        args,
	}, nil
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
	for _, plugin := range list.Plugins {
		pluginPath, err := invoke.FindInPath(plugin.Network.Type, filepath.SplitList(cniPath))
		if err != nil {
			return err
		}
		inject := map[string]interface{}{"name": list.Name, "cniVersion": list.CNIVersion}
		for k, v := range extra {
			inject[k] = v
		}
		conf, err := libcni.InjectConf(plugin, inject)
		if err != nil {
			return err
		}
		args := &invoke.Args{Command: command, Path: cniPath}
		if err := invoke.ExecPluginWithoutResult(ctx, pluginPath, conf.Bytes, args, nil); err != nil {
			return fmt.Errorf("plugin type=%q failed (%s): %w", plugin.Network.Type, strings.ToLower(command), err)
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
