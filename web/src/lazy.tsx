// A component whose code is its own chunk, loaded the first time it is shown (the Terminal and
// Changes tabs), so the initial JavaScript stays within its budget.

import type { FunctionComponent } from "preact";
import { useEffect, useState } from "preact/hooks";

import { Empty } from "./ui";

/** `load` runs once; meanwhile "Loading {what}…", on failure "{What} could not be loaded". */
export function lazyView<P extends object>(
  load: () => Promise<FunctionComponent<P>>,
  what: string,
): FunctionComponent<P> {
  let loaded: FunctionComponent<P> | null = null;
  return function Lazy(props: P) {
    const [View, setView] = useState<FunctionComponent<P> | null>(() => loaded);
    const [error, setError] = useState<string | null>(null);
    useEffect(() => {
      if (View) return;
      let live = true;
      load()
        .then((v) => {
          loaded = v;
          if (live) setView(() => v);
        })
        .catch((err: Error) => live && setError(err.message));
      return () => {
        live = false;
      };
    }, []);
    if (error)
      return (
        <p class="error" role="alert">
          {what[0].toUpperCase() + what.slice(1)} could not be loaded: {error}
        </p>
      );
    if (!View) return <Empty>Loading {what}…</Empty>;
    return <View {...props} />;
  };
}
