// flora-eval's warm scalac: Scala's own compiler driver (what `scalac` runs) in one JVM, asked
// once per program over the worker's pipes (WarmRequests.java: the protocol, and why "." and
// file names become absolute paths), keeping one compiler instance between programs
// (Resident.scala says how, and how a program's classes are kept from the next). The JVM is
// started as the scalac script starts it (the Scala jars as its class path,
// -Dscala.usejavacp=true), this class and WarmRequests from the boot class path so that the
// compiler does not see them; the compiler's default class path (".", the cold scalac's
// working directory) is given as cwd.
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;

public class ScalacWarm {
    // This class is on the boot class path, out of the compiler's sight; so is Resident, the
    // compiler's driver (Resident.scala), loaded from its own folder by a loader under the
    // application class loader, which holds the Scala jars.
    private static final java.lang.reflect.Method RESIDENT;
    static {
        try {
            java.net.URL dir = new File("/opt/flora-eval/scala/resident/").toURI().toURL();
            ClassLoader loader = new java.net.URLClassLoader(new java.net.URL[] {dir}, ClassLoader.getSystemClassLoader());
            RESIDENT = loader.loadClass("floraeval.Resident")
                .getMethod("compile", String[].class, String.class, PrintStream.class, PrintStream.class);
        } catch (ReflectiveOperationException | java.net.MalformedURLException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    private static String compile(String line) {
        Map<String, Object> request = WarmRequests.parse(line);
        String cwd = (String) request.get("cwd");
        List<String> args = WarmRequests.arguments(request);
        if (!args.contains("-cp") && !args.contains("-classpath")) {
            String env = System.getenv("CLASSPATH");
            args.add(0, env == null || env.isEmpty() ? cwd : env);
            args.add(0, "-classpath");
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        PrintStream outs = new PrintStream(out, true, StandardCharsets.UTF_8);
        PrintStream errs = new PrintStream(err, true, StandardCharsets.UTF_8);
        int exit;
        try {
            exit = (Integer) RESIDENT.invoke(null, args.toArray(new String[0]), cwd, outs, errs);
        } catch (ReflectiveOperationException e) {
            throw new RuntimeException(e);  // ends this process: the worker runs the step cold
        }
        outs.flush();
        errs.flush();
        return WarmRequests.answer(exit, out, err, cwd);
    }

    public static void main(String[] argv) throws Exception {
        PrintStream pipe = WarmRequests.takePipe();
        // a few compiles before the first program's (the JIT's first pass is seconds), with a
        // compile error among them, the Global reused as it will be; its class files removed
        // each time, as the worker gives each program a fresh dir
        java.nio.file.Path warmup = java.nio.file.Files.createTempDirectory("scalac-warm-");
        String[] sources = {
            "import scala.math._\nimport scala.collection.mutable._\nobject Warmup {\n"
                + "  def f(xs: List[Long]): Long = xs.map(x => max(x, 0l) * 2).sum\n"
                + "  def main(args: Array[String]) = { assert(f(List[Long](1l, 2l)) == (6l)); }\n}\n",
            "object Warmup {\n  def f(xs: List[Long]): Long = xs.map(_.toString)\n}\n"};
        for (int round = 0; round < 4; round++) {
            java.nio.file.Files.writeString(warmup.resolve("Warmup.scala"), sources[round % 2]);
            compile("{\"argv\": [\"scalac\", \"-d\", \".\", \"Warmup.scala\"], \"cwd\": \"" + warmup + "\"}");
            try (java.util.stream.Stream<java.nio.file.Path> files = java.nio.file.Files.list(warmup)) {
                files.filter(f -> f.toString().endsWith(".class")).forEach(f -> f.toFile().delete());
            }
        }
        try (java.util.stream.Stream<java.nio.file.Path> files = java.nio.file.Files.walk(warmup)) {
            files.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        }
        WarmRequests.serve(pipe, ScalacWarm::compile);
    }
}
