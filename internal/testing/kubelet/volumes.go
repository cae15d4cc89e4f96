package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// volumes materialises the pod's volumes under its directory and returns
// each one's path. A ConfigMap or Secret that does not exist yet holds the
// pod in ContainerCreating until it appears, as in Kubernetes (Istio's
// istio-ca-root-cert is written by the control plane after the namespace
// appears).
func (r *podRunner) volumes(ctx context.Context) (map[string]string, error) {
	p := r.pod
	base := filepath.Join(r.k.podDir(p.Namespace, p.Name), "volumes")
	out := map[string]string{}
	fsGroup := -1
	if sc := p.Spec.SecurityContext; sc != nil && sc.FSGroup != nil {
		fsGroup = int(*sc.FSGroup)
	}
	for i, v := range p.Spec.Volumes {
		path := fmt.Sprintf("spec.volumes[%d]", i)
		dir := filepath.Join(base, v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		out[v.Name] = dir
		files := map[string]fileData{}
		var err error
		switch {
		case v.EmptyDir != nil:
			// Writable by every container user, as an emptyDir is.
			err = os.Chmod(dir, 0o777)
		case v.ConfigMap != nil:
			err = r.configMapFiles(ctx, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, files, path+".configMap")
		case v.Secret != nil:
			err = r.secretFiles(ctx, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, files, path+".secret")
		case v.DownwardAPI != nil:
			err = r.downwardFiles(v.DownwardAPI.Items, files, path+".downwardAPI")
		case v.Projected != nil:
			for j, s := range v.Projected.Sources {
				spath := fmt.Sprintf("%s.projected.sources[%d]", path, j)
				switch {
				case s.ServiceAccountToken != nil:
					err = r.tokenFile(ctx, s.ServiceAccountToken, fsGroup, files, spath+".serviceAccountToken")
				case s.ConfigMap != nil:
					err = r.configMapFiles(ctx, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, files, spath+".configMap")
				case s.Secret != nil:
					err = r.secretFiles(ctx, s.Secret.Name, s.Secret.Items, s.Secret.Optional, files, spath+".secret")
				case s.DownwardAPI != nil:
					err = r.downwardFiles(s.DownwardAPI.Items, files, spath+".downwardAPI")
				default:
					err = fmt.Errorf("%s: the test kubelet projects serviceAccountToken, configMap, secret and downwardAPI only", spath)
				}
				if err != nil {
					break
				}
			}
		default:
			err = fmt.Errorf("%s (%s): the test kubelet supports emptyDir, configMap, secret, downwardAPI and projected volumes", path, v.Name)
		}
		if err != nil {
			return nil, err
		}
		names := make([]string, 0, len(files))
		for n := range files {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			f := files[n]
			fp := filepath.Join(dir, filepath.Clean("/"+n))
			if err := os.MkdirAll(filepath.Dir(fp), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(fp, f.data, f.mode); err != nil {
				return nil, err
			}
			if err := os.Chmod(fp, f.mode); err != nil {
				return nil, err
			}
			if f.gid >= 0 {
				if err := os.Chown(fp, 0, f.gid); err != nil {
					return nil, err
				}
			}
		}
	}
	return out, nil
}

type fileData struct {
	data []byte
	mode os.FileMode
	gid  int // -1: leave root's
}

// waitObject polls get until the object exists (nil error), the pod stops,
// or a non-NotFound error; optional objects that are missing give nil.
func (r *podRunner) waitObject(ctx context.Context, what string, optional bool, get func(context.Context) error) (bool, error) {
	told := false
	for {
		gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := get(gctx)
		cancel()
		switch {
		case err == nil:
			return true, nil
		case !apierrors.IsNotFound(err):
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, fmt.Errorf("%s: %w", what, err)
		case optional:
			return false, nil
		}
		if !told {
			r.mu.Lock()
			r.waitMessage = what + " not found yet"
			r.mu.Unlock()
			told = true
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func keyFiles(data map[string]string, items []corev1.KeyToPath, files map[string]fileData, path, what string) error {
	if len(items) == 0 {
		for k, v := range data {
			files[k] = fileData{data: []byte(v), mode: 0o644, gid: -1}
		}
		return nil
	}
	for i, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("%s.items[%d].key: %s has no key %q", path, i, what, it.Key)
		}
		mode := os.FileMode(0o644)
		if it.Mode != nil {
			mode = os.FileMode(*it.Mode)
		}
		files[it.Path] = fileData{data: []byte(v), mode: mode, gid: -1}
	}
	return nil
}

func (r *podRunner) configMapFiles(ctx context.Context, name string, items []corev1.KeyToPath, optional *bool, files map[string]fileData, path string) error {
	ns := r.pod.Namespace
	var cm *corev1.ConfigMap
	what := fmt.Sprintf("%s: ConfigMap %s/%s", path, ns, name)
	ok, err := r.waitObject(ctx, what, optional != nil && *optional, func(ctx context.Context) (err error) {
		cm, err = r.k.cs.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		return err
	})
	if err != nil || !ok {
		return err
	}
	data := map[string]string{}
	for k, v := range cm.BinaryData {
		data[k] = string(v)
	}
	for k, v := range cm.Data {
		data[k] = v
	}
	return keyFiles(data, items, files, path, "ConfigMap "+ns+"/"+name)
}

func (r *podRunner) secretFiles(ctx context.Context, name string, items []corev1.KeyToPath, optional *bool, files map[string]fileData, path string) error {
	ns := r.pod.Namespace
	var s *corev1.Secret
	what := fmt.Sprintf("%s: Secret %s/%s", path, ns, name)
	ok, err := r.waitObject(ctx, what, optional != nil && *optional, func(ctx context.Context) (err error) {
		s, err = r.k.cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		return err
	})
	if err != nil || !ok {
		return err
	}
	data := map[string]string{}
	for k, v := range s.Data {
		data[k] = string(v)
	}
	return keyFiles(data, items, files, path, "Secret "+ns+"/"+name)
}

// downwardFiles writes the downward API's files: labels and annotations
// as sorted key="value" lines, other fields as their value.
func (r *podRunner) downwardFiles(items []corev1.DownwardAPIVolumeFile, files map[string]fileData, path string) error {
	p := r.pod
	for i, it := range items {
		if it.FieldRef == nil {
			return fmt.Errorf("%s.items[%d]: the test kubelet answers fieldRef only", path, i)
		}
		var v string
		switch fp := it.FieldRef.FieldPath; fp {
		case "metadata.labels":
			v = formatMap(p.Labels)
		case "metadata.annotations":
			v = formatMap(p.Annotations)
		case "metadata.name":
			v = p.Name
		case "metadata.namespace":
			v = p.Namespace
		case "metadata.uid":
			v = string(p.UID)
		default:
			return fmt.Errorf("%s.items[%d].fieldRef.fieldPath %q: the test kubelet answers metadata.labels, metadata.annotations, metadata.name, metadata.namespace and metadata.uid", path, i, fp)
		}
		mode := os.FileMode(0o644)
		if it.Mode != nil {
			mode = os.FileMode(*it.Mode)
		}
		files[it.Path] = fileData{data: []byte(v), mode: mode, gid: -1}
	}
	return nil
}

func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(k + "=" + strconv.Quote(m[k]))
	}
	return b.String()
}

// tokenFile asks the TokenRequest API for the pod's service-account token
// of the projection's audience, bound to the pod, as the kubelet does.
// With an fsGroup the file is readable by that group (Istio's injector
// sets 1337 so the proxy can read it).
func (r *podRunner) tokenFile(ctx context.Context, proj *corev1.ServiceAccountTokenProjection, fsGroup int, files map[string]fileData, path string) error {
	p := r.pod
	sa := cmpOr(p.Spec.ServiceAccountName, "default")
	spec := authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
	}
	if proj.Audience != "" {
		spec.Audiences = []string{proj.Audience}
	}
	if proj.ExpirationSeconds != nil {
		spec.ExpirationSeconds = proj.ExpirationSeconds
	}
	var tr *authenticationv1.TokenRequest
	what := fmt.Sprintf("%s: ServiceAccount %s/%s", path, p.Namespace, sa)
	if _, err := r.waitObject(ctx, what, false, func(ctx context.Context) (err error) {
		tr, err = r.k.cs.CoreV1().ServiceAccounts(p.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
		return err
	}); err != nil {
		return err
	}
	f := fileData{data: []byte(tr.Status.Token), mode: 0o600, gid: -1}
	if fsGroup >= 0 {
		f.mode, f.gid = 0o640, fsGroup
	}
	files[proj.Path] = f
	return nil
}
