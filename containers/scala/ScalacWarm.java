// flora-eval's warm scalac: Scala's own compiler driver (what `scalac` runs) in one JVM, asked
// once per program, keeping one compiler instance between programs (Resident.scala says how,
// and how a program's classes are kept from the next). Protocol (harness/execute/worker.py,
// "Warm steps"): after one {"ready": true} line, each request line {"argv": ["scalac", ...],
// "cwd": dir} is answered by one line {"exit_code", "stdout", "stderr"}. The JVM is started as
// the scalac script starts it (the Scala jars as its class path, -Dscala.usejavacp=true), this
// class from the boot class path so that the compiler does not see it. The JVM cannot change
// its working directory, so "." and the names of files in cwd are passed as absolute paths,
// the compiler's default class path (".", the cold scalac's working directory) is given as
// cwd, and "cwd/" is taken out of the messages again.
import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

public class ScalacWarm {
    private final String s;
    private int i;

    private ScalacWarm(String s) { this.s = s; }

    private void ws() { while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++; }

    private Object value() {
        ws();
        char c = s.charAt(i);
        if (c == '"') return string();
        if (c == '[') {
            List<Object> list = new ArrayList<>();
            i++; ws();
            if (s.charAt(i) == ']') { i++; return list; }
            while (true) {
                list.add(value()); ws();
                if (s.charAt(i++) == ']') return list;
            }
        }
        if (c == '{') {
            Map<String, Object> map = new HashMap<>();
            i++; ws();
            if (s.charAt(i) == '}') { i++; return map; }
            while (true) {
                ws(); String key = string(); ws(); i++; // ':'
                map.put(key, value()); ws();
                if (s.charAt(i++) == '}') return map;
            }
        }
        int start = i;
        while (i < s.length() && ",]}".indexOf(s.charAt(i)) < 0) i++;
        return s.substring(start, i).trim();
    }

    private String string() {
        StringBuilder b = new StringBuilder();
        i++; // opening quote
        while (true) {
            char c = s.charAt(i++);
            if (c == '"') return b.toString();
            if (c != '\\') { b.append(c); continue; }
            char e = s.charAt(i++);
            switch (e) {
                case 'n': b.append('\n'); break;
                case 't': b.append('\t'); break;
                case 'r': b.append('\r'); break;
                case 'b': b.append('\b'); break;
                case 'f': b.append('\f'); break;
                case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
                default: b.append(e);
            }
        }
    }

    private static String quote(String text) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20 || c > 0x7e) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

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

    @SuppressWarnings("unchecked")
    private static String compile(String line) {
        Map<String, Object> request = (Map<String, Object>) new ScalacWarm(line).value();
        List<Object> argv = (List<Object>) request.get("argv");
        String cwd = (String) request.get("cwd");
        List<String> args = new ArrayList<>();
        for (Object o : argv.subList(1, argv.size())) {
            String arg = (String) o;
            if (arg.equals(".")) arg = cwd;
            else if (!arg.startsWith("-") && new File(cwd, arg).exists()) arg = cwd + "/" + arg;
            args.add(arg);
        }
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
        String prefix = cwd + "/";
        return "{\"exit_code\": " + exit
            + ", \"stdout\": " + quote(out.toString(StandardCharsets.UTF_8).replace(prefix, ""))
            + ", \"stderr\": " + quote(err.toString(StandardCharsets.UTF_8).replace(prefix, "")) + "}";
    }

    public static void main(String[] argv) throws Exception {
        PrintStream answers = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        System.setOut(new PrintStream(new ByteArrayOutputStream()));  // nothing else reaches the pipe
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
        answers.println("{\"ready\": true}");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = in.readLine(); line != null; line = in.readLine()) {
            if (!line.isBlank()) answers.println(compile(line));
        }
    }
}
